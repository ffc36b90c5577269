//! The media relay (selective forwarding unit): one peer connection per participant with the server.
