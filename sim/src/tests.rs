//! Unit tests of the engine through the in-process dispatcher.
