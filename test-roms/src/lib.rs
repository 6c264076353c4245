//! test roms
