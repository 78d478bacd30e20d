//! Control plane (openraft): which region is primary, write leases, switchover and failover.
