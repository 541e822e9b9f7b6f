//! The HTTP API driven over a real listener.

mod admin;
mod admission;
mod alerts;
mod auth;
mod common;
mod dlq;
mod groups;
mod ops;
mod publish;
mod read;
mod replay;
mod storage;
mod tenants;
