//! A library with generated code from its build script.
include!(concat!(env!("OUT_DIR"), "/words.rs"));

pub fn greet(name: &str) -> String {
    format!("hello, {name}: {}", WORDS.join(", "))
}
