pub mod mangle;
