//! Procedural macros for `jobqueue`. Use them through the `jobqueue` crate,
//! which re-exports them and documents them: `jobqueue::job`.

mod args;
mod duration;
mod expand;
mod signature;

use proc_macro::TokenStream;

/// Declares a background job on an `async fn`. Documented on `jobqueue::job`.
#[proc_macro_attribute]
pub fn job(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::job(args.into(), item.into()).into()
}
