//! kfix as a library: the engine, parsers and transports behind the `kfix` command
//! (src/main.rs). Exposed so the fuzz targets (fuzz/) drive the same parsers the
//! command uses; the command line is the supported interface.

pub mod alerts;
pub mod calico;
pub mod cli;
pub mod commands;
pub mod diag;
pub mod exec;
pub mod host;
pub mod inventory;
pub mod journal;
pub mod localfs;
pub mod matrix;
pub mod net;
pub mod npd;
pub mod outcome;
pub mod plan;
pub mod playbook;
pub mod pool;
pub mod probe;
pub mod quote;
pub mod report;
pub mod rollback;
pub mod rollout;
pub mod runner;
pub mod secrets;
pub mod serve;
pub mod show;
pub mod steps;
pub mod template;
pub mod text;
pub mod trace;
pub mod transport;
pub mod yaml;
