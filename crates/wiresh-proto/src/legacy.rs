//! The legacy protocol of `shared/legacy` (see `docs/PROTOCOL.md`).
