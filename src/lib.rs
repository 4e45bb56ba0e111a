//! envoy-qat: an Intel QuickAssist (QAT) private-key provider and gzip compressor
//! for Envoy and Istio. See `DESIGN.md` of the project for the layering.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod backend;
pub mod bench;
#[cfg(feature = "glue")]
pub mod bridge;
pub mod check;
pub mod compress;
pub mod config;
pub mod engine;
pub mod key;
pub mod scheme;
#[cfg(feature = "glue")]
pub mod serve;
pub mod stdio;
