//! The drill's timeline as a hand-written SVG (`timeline.svg`): acknowledged writes per
//! second by the region whose endpoint took them, replication lag (records) per region, and
//! vertical marks for faults (red), heals (green) and changes of primary (blue).

use std::collections::BTreeMap;
use std::fmt::Write;

use super::report::{Event, EventKind, Outcome};

const W: f64 = 960.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const PANEL_H: f64 = 170.0;
const TOP1: f64 = 40.0;
const TOP2: f64 = TOP1 + PANEL_H + 50.0;
const H: f64 = TOP2 + PANEL_H + 60.0;
const COLORS: [&str; 4] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders the timeline of `events` (any order).
pub fn timeline_svg(title: &str, events: &[Event]) -> String {
    let t0 = events
        .iter()
        .find_map(|e| matches!(e.kind, EventKind::WorkloadStart(_)).then_some(e.at_ms))
        .or_else(|| events.iter().map(|e| e.at_ms).min())
        .unwrap_or(0);
    let t_end = events
        .iter()
        .map(|e| e.at_ms)
        .max()
        .unwrap_or(t0)
        .max(t0 + 1000);
    let secs = ((t_end - t0) as f64 / 1000.0).ceil().max(1.0);
    let x = |ms: u64| LEFT + (ms.saturating_sub(t0) as f64 / 1000.0) / secs * (W - LEFT - RIGHT);

    // writes/s per endpoint region
    let mut writes: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut lag: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
    let mut marks: Vec<(u64, &str, String)> = Vec::new();
    for e in events {
        match &e.kind {
            EventKind::Commit(c) => {
                let v = writes
                    .entry(c.endpoint_region.clone())
                    .or_insert_with(|| vec![0; secs as usize + 1]);
                if c.outcome == Outcome::Acked && c.end_ms >= t0 {
                    let i = ((c.end_ms - t0) / 1000) as usize;
                    if let Some(slot) = v.get_mut(i) {
                        *slot += 1;
                    }
                }
            }
            EventKind::Replication(s) if s.ok => {
                if let Some(l) = s.lag_records {
                    lag.entry(s.region.clone())
                        .or_default()
                        .push((e.at_ms, l as f64));
                }
            }
            EventKind::Fault(f) => marks.push((
                e.at_ms,
                "#d62728",
                format!("{} {}", f.action, f.target.as_deref().unwrap_or("")),
            )),
            EventKind::Heal(f) => marks.push((
                e.at_ms,
                "#2ca02c",
                format!("{} {}", f.action, f.target.as_deref().unwrap_or("")),
            )),
            EventKind::Failover(f) => marks.push((
                e.at_ms,
                "#1f3fb4",
                format!("epoch {} primary {}", f.epoch, f.to),
            )),
            EventKind::WorkloadEnd => marks.push((e.at_ms, "#777777", "writers stop".into())),
            _ => {}
        }
    }
    let max_w = writes.values().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let max_lag = lag
        .values()
        .flatten()
        .map(|(_, l)| *l)
        .fold(1.0f64, f64::max);

    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="20" font-size="14">{}</text>
"#,
        esc(title)
    );
    for (top, label, max) in [
        (TOP1, "acknowledged writes / s (by endpoint region)", max_w),
        (TOP2, "replication lag (records)", max_lag),
    ] {
        let _ = write!(
            s,
            r##"<text x="{LEFT}" y="{}">{label}</text>
<line x1="{LEFT}" y1="{}" x2="{}" y2="{}" stroke="#333"/>
<line x1="{LEFT}" y1="{top}" x2="{LEFT}" y2="{}" stroke="#333"/>
<text x="{}" y="{}" text-anchor="end">{}</text>
<text x="{}" y="{}" text-anchor="end">0</text>
"##,
            top - 6.0,
            top + PANEL_H,
            W - RIGHT,
            top + PANEL_H,
            top + PANEL_H,
            LEFT - 4.0,
            top + 10.0,
            max.round(),
            LEFT - 4.0,
            top + PANEL_H,
        );
    }
    // time axis ticks
    let step = (secs / 10.0).ceil().max(1.0) as u64;
    for t in (0..=secs as u64).step_by(step as usize) {
        let xx = x(t0 + t * 1000);
        let _ = writeln!(
            s,
            r##"<text x="{xx:.1}" y="{:.1}" text-anchor="middle">{t}s</text>"##,
            TOP2 + PANEL_H + 14.0
        );
    }
    for (i, (region, v)) in writes.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<String> = v
            .iter()
            .enumerate()
            .map(|(sec, n)| {
                format!(
                    "{:.1},{:.1}",
                    x(t0 + sec as u64 * 1000 + 500),
                    TOP1 + PANEL_H - *n as f64 / max_w * PANEL_H
                )
            })
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>
<text x="{:.1}" y="{:.1}" fill="{color}">{}</text>"#,
            pts.join(" "),
            W - RIGHT - 150.0,
            TOP1 + 12.0 + 13.0 * i as f64,
            esc(region)
        );
    }
    for (i, (region, v)) in lag.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<String> = v
            .iter()
            .map(|(at, l)| {
                format!(
                    "{:.1},{:.1}",
                    x(*at),
                    TOP2 + PANEL_H - l / max_lag * PANEL_H
                )
            })
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>
<text x="{:.1}" y="{:.1}" fill="{color}">{}</text>"#,
            pts.join(" "),
            W - RIGHT - 150.0,
            TOP2 + 12.0 + 13.0 * i as f64,
            esc(region)
        );
    }
    marks.sort_by_key(|m| m.0);
    for (i, (at, color, label)) in marks.iter().enumerate() {
        let xx = x(*at);
        let _ = writeln!(
            s,
            r#"<line x1="{xx:.1}" y1="{TOP1}" x2="{xx:.1}" y2="{:.1}" stroke="{color}" stroke-dasharray="4 3"/>
<text x="{:.1}" y="{:.1}" fill="{color}">{}</text>"#,
            TOP2 + PANEL_H,
            xx + 3.0,
            H - 30.0 + 11.0 * (i % 3) as f64,
            esc(label.trim())
        );
    }
    s.push_str("</svg>\n");
    s
}
