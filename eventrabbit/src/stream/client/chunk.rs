//! A `deliver` frame's chunk, read record by record: each record's offset is known from
//! the chunk's first offset and its place, so a record that does not decode is reported
//! with its offset (and set aside by the reader) while the others are read.

use super::bytes::{Cursor, Short};
use rabbitmq_stream_protocol::codec::Decoder;
use rabbitmq_stream_protocol::message::Message;

/// One record of a chunk: its offset, and its message or why it cannot be read.
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) offset: u64,
    pub(crate) message: Result<Message, String>,
}

/// The subscription a chunk is for, and its records in offset order.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub(crate) subscription: u8,
    pub(crate) records: Vec<Record>,
}

/// Reads a `deliver` frame's body (after its key and version). An error means the
/// chunk's header itself is cut: no offset is known.
pub(crate) fn read(body: &[u8]) -> Result<Chunk, Short> {
    let mut c = Cursor::new(body);
    let subscription = c.u8()?;
    let _magic = c.u8()?;
    let _chunk_type = c.u8()?;
    let entries = c.u16()?;
    let records = c.u32()?;
    let _timestamp = c.u64()?;
    let _epoch = c.u64()?;
    let first = c.u64()?;
    let _crc = c.u32()?;
    let data_len = c.u32()?;
    let _trailer_len = c.u32()?;
    let _reserved = c.u32()?;
    let data = c.rest();
    let data = &data[..data.len().min(data_len as usize)];
    // Every record takes at least its 4-byte size: a corrupt count is bounded.
    let records = (records as usize).min(data.len() / 4 + 1);
    let mut out = Vec::with_capacity(records);
    let mut c = Cursor::new(data);
    for _ in 0..entries {
        if out.len() >= records {
            break;
        }
        if entry(&mut c, first, &mut out).is_err() {
            break;
        }
    }
    // Records the chunk counts but whose bytes are cut or malformed: each is reported
    // unreadable at its offset rather than skipped.
    while out.len() < records {
        out.push(Record {
            offset: first.saturating_add(out.len() as u64),
            message: Err("the chunk ends before this record's bytes".to_owned()),
        });
    }
    Ok(Chunk {
        subscription,
        records: out,
    })
}

/// One entry: a simple record (`0` then a 31-bit size), or a sub-batch (`1`, its
/// compression, record count and sizes, then its records); only uncompressed sub-batches
/// can be read here (AMQP-published events are simple records), the others' records are
/// reported unreadable.
fn entry(c: &mut Cursor<'_>, first: u64, out: &mut Vec<Record>) -> Result<(), Short> {
    let head = c.u32()?;
    if head & 0x8000_0000 == 0 {
        let bytes = c.take((head & 0x7fff_ffff) as usize)?;
        let offset = first.saturating_add(out.len() as u64);
        out.push(Record {
            offset,
            message: decode(bytes),
        });
        return Ok(());
    }
    // Sub-batch: the flag and compression in the first byte, then the record count in
    // the next two; then the uncompressed and the stored sizes.
    let compression = (head >> 28) & 0x7;
    let count = (head >> 8) & 0xffff;
    let _uncompressed = ((head & 0xff) << 24) | (u32::from(c.u8()?) << 16) | u32::from(c.u16()?);
    let size = c.u32()?;
    let bytes = c.take(size as usize)?;
    let mut inner = Cursor::new(bytes);
    for _ in 0..count {
        let offset = first.saturating_add(out.len() as u64);
        let message = if compression == 0 {
            let len = inner.u32().map_err(|_| Short)?;
            match inner.take(len as usize) {
                Ok(bytes) => decode(bytes),
                Err(_) => Err("the sub-batch ends before this record's bytes".to_owned()),
            }
        } else {
            Err(format!(
                "a compressed sub-batch (compression type {compression}) cannot be read"
            ))
        };
        out.push(Record { offset, message });
    }
    Ok(())
}

/// One record's AMQP 1.0 message. The codec is another crate's: a panic in it on some
/// input is caught and reported as this record being unreadable.
fn decode(bytes: &[u8]) -> Result<Message, String> {
    let decoded = std::panic::catch_unwind(|| Message::decode(bytes).map(|(_, m)| m));
    match decoded {
        Ok(Ok(message)) => Ok(message),
        Ok(Err(e)) => Err(format!("its AMQP 1.0 encoding does not decode: {e:?}")),
        Err(_) => Err("its AMQP 1.0 encoding made the decoder fail".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rabbitmq_stream_protocol::codec::Encoder;

    fn encoded(body: &str) -> Vec<u8> {
        let m = Message::builder().body(body.as_bytes().to_vec()).build();
        let mut out = Vec::new();
        m.encode(&mut out).unwrap();
        out
    }

    fn chunk(first: u64, entries: u16, records: u32, data: &[u8]) -> Vec<u8> {
        let mut f = vec![7u8, 0x50, 0];
        f.extend(entries.to_be_bytes());
        f.extend(records.to_be_bytes());
        f.extend(0u64.to_be_bytes());
        f.extend(0u64.to_be_bytes());
        f.extend(first.to_be_bytes());
        f.extend(0u32.to_be_bytes());
        f.extend(u32::try_from(data.len()).unwrap().to_be_bytes());
        f.extend(0u32.to_be_bytes());
        f.extend(0u32.to_be_bytes());
        f.extend(data);
        f
    }

    fn simple(bytes: &[u8]) -> Vec<u8> {
        let mut e = u32::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
        e.extend(bytes);
        e
    }

    fn body(r: &Record) -> Vec<u8> {
        r.message.as_ref().unwrap().data().unwrap().to_vec()
    }

    #[test]
    fn simple_records_get_their_offsets_and_a_bad_one_is_named() {
        let mut data = simple(&encoded("a"));
        data.extend(simple(&[0xff, 0xff, 0xff]));
        data.extend(simple(&encoded("c")));
        let c = read(&chunk(40, 3, 3, &data)).unwrap();
        assert_eq!(c.subscription, 7);
        let offsets: Vec<u64> = c.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [40, 41, 42]);
        assert_eq!(body(&c.records[0]), b"a");
        assert!(c.records[1].message.is_err());
        assert_eq!(body(&c.records[2]), b"c");
    }

    #[test]
    fn an_uncompressed_sub_batch_is_read_and_a_compressed_one_reported() {
        let mut records = simple(&encoded("x"));
        records.extend(simple(&encoded("y")));
        let batch = |compression: u32| {
            let mut e = (0x8000_0000u32 | (compression << 28) | (2 << 8))
                .to_be_bytes()
                .to_vec();
            e.extend([0u8, 0, 0]);
            e.extend(u32::try_from(records.len()).unwrap().to_be_bytes());
            e.extend(&records);
            e
        };
        let mut data = batch(0);
        data.extend(batch(1));
        let c = read(&chunk(0, 2, 4, &data)).unwrap();
        assert_eq!(body(&c.records[0]), b"x");
        assert_eq!(body(&c.records[1]), b"y");
        assert!(
            c.records[2]
                .message
                .as_ref()
                .unwrap_err()
                .contains("compressed")
        );
        assert_eq!(c.records[3].offset, 3);
    }

    #[test]
    fn cut_chunks_never_panic_and_keep_offsets() {
        let mut data = simple(&encoded("a"));
        data.extend(simple(&encoded("b")));
        let full = chunk(10, 2, 2, &data);
        for cut in 0..full.len() {
            if let Ok(c) = read(&full[..cut]) {
                assert!(c.records.len() <= 2);
                for (i, r) in c.records.iter().enumerate() {
                    assert_eq!(r.offset, 10 + i as u64);
                }
            }
        }
        // A record count far beyond the bytes is bounded.
        let c = read(&chunk(0, 1, u32::MAX, &simple(&encoded("a")))).unwrap();
        assert!(c.records.len() < 100);
    }
}
