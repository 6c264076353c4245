//! chipset
