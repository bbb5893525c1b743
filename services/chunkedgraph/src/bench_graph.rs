//! `chunkedgraph bench graph`: placeholder, being written.
