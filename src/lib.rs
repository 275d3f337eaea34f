//! Berth: a self-hostable Docker/OCI registry. See ARCHITECTURE.md for the map.

pub mod access_log;
pub mod acme;
pub mod api;
pub mod auth;
pub mod cli;
pub mod client_ip;
pub mod config;
pub mod error;
pub mod events;
pub mod gc;
pub mod manage;
pub mod meta;
pub mod metrics;
pub mod mirror;
pub mod oci;
pub mod registry;
pub mod remote;
pub mod replication;
pub mod runtime;
pub mod seal;
pub mod server;
pub mod state;
pub mod storage;
pub mod tls;
pub mod ui;
