//! berth's integration tests: the real `berth` binary on a temp dir and a random loopback
//! port, driven over HTTP.

mod harness;

mod auth;
mod cache;
mod cli;
mod config;
mod conformance;
mod crash;
mod events;
mod events_cli;
mod fsck;
mod gc;
mod immutable;
mod lifecycle;
mod quota;
mod ratelimit;
mod smoke;
mod streaming;
mod tags;
mod tls;
mod webhooks;
