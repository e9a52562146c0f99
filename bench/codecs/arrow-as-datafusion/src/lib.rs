pub use arrow;
