//! `chunkedgraph ingest`: placeholder, being written.
