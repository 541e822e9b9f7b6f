//! The HTTP API driven over a real listener.

mod admin;
mod auth;
mod common;
mod ops;
mod publish;
mod read;
