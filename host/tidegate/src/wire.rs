//! The PostgreSQL protocol as bytes: message kinds as types ([`kind`]), message framing and
//! the messages the broker writes itself ([`proto`]), and server-side SCRAM-SHA-256 ([`auth`]). The lowest layer: it imports
//! no other module of the crate.

pub mod auth;
pub mod kind;
pub mod proto;
