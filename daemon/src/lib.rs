//! autoneural-daemon (see ARCHITECTURE.md).
