//! qcow2, read to vet an image before imago opens it and to find its
//! backing file.
//!
//! # Primer (QEMU's `docs/interop/qcow2.txt`)
//! A qcow2 file is a sequence of clusters of 2^cluster_bits bytes (512 B to
//! 2 MiB). The first cluster starts with a big-endian header:
//!
//! | offset | field |
//! | --- | --- |
//! | 0 | magic `QFI\xfb` |
//! | 4 | version: 2 or 3 |
//! | 8, 16 | backing file name: offset (u64) and length (u32) in the first cluster |
//! | 20 | cluster_bits |
//! | 24 | size: the virtual disk, in bytes |
//! | 32 | crypt_method: 0 unless encrypted |
//! | 36, 40 | L1 table: entries (u32) and offset (u64) |
//! | 48, 56 | refcount table: offset (u64) and clusters (u32) |
//! | 72 | v3: incompatible features (an image with a bit we do not know must not be opened) |
//! | 96, 100 | v3: refcount_order, header_length |
//!
//! Header extensions follow the header (type u32, length u32, data padded to
//! 8 bytes; type 0 ends them); type `0xe2792aca` names the backing file's
//! format. A relative backing file name is relative to the image's
//! directory. Guest data lives in clusters found through a two-level table
//! (L1 → L2 → data); a cluster the image does not hold reads from its
//! backing file, which is how an overlay shares a base it never writes.
//! Table entries keep a cluster's offset in bits 9-55. Refcounts are kept
//! the same way: the refcount table points to refcount blocks.
//!
//! imago parses the header itself. These checks exist so that an image a
//! user hands us fails early, saying what is wrong with it: a truncated
//! file (imago reads zeros past the end of a file, so a truncated image
//! would otherwise open and read as zeros), a corrupt field, or a feature
//! that neither we nor imago support (imago ignores `crypt_method` and would
//! hand the guest ciphertext). The bytes are untrusted: every offset and
//! length is checked before use, and any input yields an answer, never a
//! panic (property tests say so).
//!
//! [`ondisk`] decodes the bytes as stored; [`header`] judges them and gives
//! the logical [`Header`]; [`tables`] follows the header's tables one level
//! down.

pub mod header;
pub mod ondisk;
pub mod tables;

pub use header::{first_cluster_bytes, parse, Backing, Header, Problem, Table};
pub use ondisk::MAGIC;
pub use tables::check_tables;
