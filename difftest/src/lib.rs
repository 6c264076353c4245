//! difftest
