//! Procedural macros for `jobqueue`.
//!
//! Users never depend on this crate directly: `jobqueue` re-exports what it
//! defines. The `#[job]` attribute arrives with the macro issue; until then
//! this crate only reserves its place in the workspace so the layout and the
//! `=x.y.z` pin are settled before the first macro lands.
