//! Test support: spawn the real server on port 0.
