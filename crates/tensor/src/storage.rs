//! Where a tensor's elements live: a host byte buffer, a list of strings, or a device.

use std::fmt;
use strata_memory::AlignedBuffer;

/// Memory owned by a device backend (GPU). Backends implement this; the tensor only needs to
/// name the device and copy the bytes back.
pub trait DeviceStorage: Send + Sync + fmt::Debug {
    /// Name of the device holding the data (for example `cuda:0`).
    fn device(&self) -> String;
    /// Copies the bytes, row-major, to the host.
    fn to_host(&self) -> std::io::Result<Vec<u8>>;
}

/// The elements of one or more tensors (views share it through an `Arc`).
#[derive(Debug)]
pub enum Storage {
    /// Plain elements in a 64-byte aligned host buffer (little-endian).
    Host(AlignedBuffer),
    /// Strings, one per element.
    Strings(Vec<String>),
    /// Elements resident on an accelerator.
    Device(Box<dyn DeviceStorage>),
}

impl Storage {
    /// Storage length in elements of `size_of` bytes (strings: element count).
    pub fn elements(&self, size_of: usize) -> usize {
        match self {
            Storage::Host(b) => b.len().checked_div(size_of).unwrap_or(0),
            Storage::Strings(s) => s.len(),
            Storage::Device(_) => 0,
        }
    }
}
