//! A procedural macro: `stamp!()` expands to a string literal.
use proc_macro::TokenStream;

#[proc_macro]
pub fn stamp(_input: TokenStream) -> TokenStream {
    "\"compiled once, reused from the kache store\"".parse().unwrap()
}
