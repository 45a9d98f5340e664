//! autoneural-inference (see ARCHITECTURE.md).
