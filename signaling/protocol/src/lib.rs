//! Wire types of the signaling protocol.
