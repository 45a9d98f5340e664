//! autoneural-policies (see ARCHITECTURE.md).
