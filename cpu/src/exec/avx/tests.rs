//! AVX tests.
