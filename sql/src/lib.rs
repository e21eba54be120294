//! SQL over the lake.
