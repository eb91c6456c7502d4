//! Placeholder: the store module is being written.
