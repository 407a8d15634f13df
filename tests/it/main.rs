//! The integration tests, as one test binary (`cargo test --test it`): one module per area, helpers
//! shared by all of them in `common`. One binary instead of one per file: the crate and its
//! dependencies are linked once, not ~30 times.
//!
//! All tests share one process, so no test may change process-wide state (environment variables,
//! the current directory, the umask, signal dispositions): give it to the child process instead
//! (`Command::env`, `Command::current_dir`), or, for state that library code in this process reads,
//! run the test body in a child process of this binary (`common::child`).
//! Tests run in parallel across modules: use temp dirs and port 0, never fixed paths or ports.

mod common;

mod architecture;
mod build_inputs;
mod cache_safety;
mod cli_load;
mod cli_workflow;
mod cnb_distribution;
mod cnb_launcher;
mod cnb_platform;
mod correctness_faults;
mod correctness_keys;
mod debian_deb;
mod debian_examples;
mod debian_stack;
mod engine;
mod image_test;
mod images;
mod integration_test;
mod multiarch;
mod oci_images;
mod rebase;
mod registry_cli;
mod registry_faults;
mod registry_push_pull;
mod reliability_bad_input;
mod reliability_faults;
mod reliability_fuzz;
mod reliability_incremental;
mod reliability_security;
mod remote_cache;
mod remote_cli;
mod remote_exec;
mod remote_faults;
mod remote_grpc;
mod remote_lazy;
mod remote_state;
mod sandbox_escape;
mod security_buildpacks;
mod security_extract;
mod security_inputs;
mod security_limits;
mod security_remote;
mod security_sandbox;
mod supply_chain;
mod watch;
