fn main() {
    println!("{}", demo_greeting::greet("kache"));
    println!("{}", demo_macros::stamp!());
}
