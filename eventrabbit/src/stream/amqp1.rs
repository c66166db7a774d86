//! Just enough of AMQP 1.0's encoding to read a stream message's creation time, which the
//! stream protocol's codec decodes but keeps private: the sections are walked by their constructors
//! (each value's width follows from its type code), to the tenth field of the properties.

/// The descriptor of the properties section.
const PROPERTIES: u8 = 0x73;
/// `creation-time` is the tenth field of the properties list.
const CREATION_TIME_FIELD: usize = 9;
/// The type code of a timestamp (milliseconds since the epoch, signed 64-bit).
const TIMESTAMP: u8 = 0x83;

/// The creation time in the properties section of an encoded message, in milliseconds
/// since the epoch; `None` when it has none (or the bytes do not read).
pub(crate) fn creation_time_ms(b: &[u8]) -> Option<i64> {
    let mut at = 0;
    while at < b.len() {
        // A section: a described value, `0x00`, its descriptor, its value.
        if *b.get(at)? != 0x00 {
            return None;
        }
        let value = skip(b, at + 1)?;
        if descriptor_code(b, at + 1)? == PROPERTIES {
            return field_timestamp(b, value, CREATION_TIME_FIELD);
        }
        at = skip(b, value)?;
    }
    None
}

/// The low byte of a section's numeric descriptor (`smallulong` or `ulong`).
fn descriptor_code(b: &[u8], at: usize) -> Option<u8> {
    match *b.get(at)? {
        0x53 => b.get(at + 1).copied(),
        0x80 => b.get(at + 8).copied(),
        _ => None,
    }
}

/// Field `index` of the list at `at`, if it is a timestamp.
fn field_timestamp(b: &[u8], at: usize, index: usize) -> Option<i64> {
    let (count, mut pos) = match *b.get(at)? {
        0xc0 => (usize::from(*b.get(at + 2)?), at + 3),
        0xd0 => (be_u32(b, at + 5)? as usize, at + 9),
        _ => return None,
    };
    if count <= index {
        return None;
    }
    for _ in 0..index {
        pos = skip(b, pos)?;
    }
    if *b.get(pos)? != TIMESTAMP {
        return None;
    }
    let bytes: [u8; 8] = b.get(pos + 1..pos + 9)?.try_into().ok()?;
    Some(i64::from_be_bytes(bytes))
}

/// Where the value encoded at `at` ends.
fn skip(b: &[u8], at: usize) -> Option<usize> {
    let code = *b.get(at)?;
    if code == 0x00 {
        // Described: the descriptor, then the value.
        let value = skip(b, at + 1)?;
        return skip(b, value);
    }
    let body = at + 1;
    let end = match code >> 4 {
        0x4 => body,
        0x5 => body + 1,
        0x6 => body + 2,
        0x7 => body + 4,
        0x8 => body + 8,
        0x9 => body + 16,
        // Variable width, compound and array: a one-byte or four-byte size first.
        0xa | 0xc | 0xe => body + 1 + usize::from(*b.get(body)?),
        0xb | 0xd | 0xf => body + 4 + be_u32(b, body)? as usize,
        _ => return None,
    };
    (end <= b.len()).then_some(end)
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header section, then properties with a string message id, eight nulls and the
    /// creation time, then a data section.
    fn message(list: u8, time_ms: i64) -> Vec<u8> {
        let mut fields = vec![0xa1, 3, b'i', b'd', b'1'];
        fields.extend([0x40; 8]);
        fields.push(TIMESTAMP);
        fields.extend(time_ms.to_be_bytes());
        let mut b = vec![0x00, 0x53, 0x70, 0xc0, 2, 1, 0x41];
        b.extend([0x00, 0x53, PROPERTIES]);
        if list == 0xc0 {
            b.extend([0xc0, (fields.len() + 1) as u8, 10]);
        } else {
            b.push(0xd0);
            b.extend(((fields.len() + 4) as u32).to_be_bytes());
            b.extend(10u32.to_be_bytes());
        }
        b.extend(fields);
        b.extend([0x00, 0x53, 0x75, 0xa0, 2, b'{', b'}']);
        b
    }

    #[test]
    fn reads_the_creation_time_from_either_list_form() {
        assert_eq!(
            creation_time_ms(&message(0xc0, 1_700_000_000_250)),
            Some(1_700_000_000_250)
        );
        assert_eq!(creation_time_ms(&message(0xd0, 42)), Some(42));
    }

    #[test]
    fn no_properties_a_short_list_or_cut_bytes_read_as_none() {
        assert_eq!(
            creation_time_ms(&[0x00, 0x53, 0x75, 0xa0, 2, b'{', b'}']),
            None
        );
        // Properties with only a message id.
        assert_eq!(
            creation_time_ms(&[0x00, 0x53, 0x73, 0xc0, 6, 1, 0xa1, 3, b'i', b'd', b'1']),
            None
        );
        let whole = message(0xc0, 7);
        for cut in 0..whole.len() - 8 {
            assert_eq!(creation_time_ms(&whole[..cut]), None, "cut at {cut}");
        }
        assert_eq!(creation_time_ms(&[0xff, 0x00]), None);
    }
}
