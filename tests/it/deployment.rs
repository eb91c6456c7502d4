//! rekey where users run it: the shipped systemd unit under a real systemd
//! (PID 1 of a systemd-nspawn container) next to Debian's nginx, and the
//! Kubernetes example's pod run the way a kubelet would run it, with real
//! nginx and rekey processes. Both run in a Debian rootfs built once with
//! debootstrap and cached in `target/deployment/` (`deployment/rootfs.rs`).
//! Each is a scorecard scenario (suite `deployment`).

mod container;
mod pod;
mod rootfs;
mod systemd;
