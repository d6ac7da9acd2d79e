//! A FastCGI application's output (`upstream::fastcgi`): the record
//! decoder over arbitrary bytes in arbitrary reads, STDOUT gathered into
//! the CGI head parser, then the body up to END_REQUEST, as the exchange
//! reads them; and PARAMS name-value pairs decoded and encoded back.
//! Invariants: the outcome (head, body, end, bytes left) does not depend
//! on the reads; never more bytes out than in; pairs that decode encode
//! to the same bytes and survive the PARAMS stream whole.
//!
//! Input: the cuts (`common.rs`), then a mode byte: even, the output of an
//! application; odd, PARAMS content.

#![no_main]

#[path = "../common.rs"]
mod common;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use moongate::upstream::fastcgi::decode::{Record, RecordDecoder};
use moongate::upstream::fastcgi::record::Header;
use moongate::upstream::fastcgi::{cgi_head, params};

/// What one way of reading produced.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    head: Option<String>,
    body: Vec<u8>,
    end: Result<String, String>,
    left: Vec<u8>,
}

fn run(pieces: Vec<&[u8]>) -> Outcome {
    let mut pieces = pieces.into_iter();
    let mut buf = BytesMut::new();
    let mut decoder = RecordDecoder::new(1);
    let mut head: Option<String> = None;
    let mut stdout = Vec::new();
    let mut body = Vec::new();
    let end = loop {
        match decoder.decode(&mut buf) {
            Err(e) => break Err(e.to_string()),
            Ok(None) => match pieces.next() {
                Some(p) => buf.extend_from_slice(p),
                None => break Err("closed".into()),
            },
            Ok(Some(Record::Stderr(_))) => {}
            Ok(Some(Record::Stdout(data))) => {
                assert!(data.len() <= 65535);
                if head.is_some() {
                    body.extend_from_slice(&data);
                    continue;
                }
                stdout.extend_from_slice(&data);
                match cgi_head::parse(&stdout) {
                    Ok(None) => {}
                    Ok(Some((h, len))) => {
                        assert!(len <= stdout.len());
                        head = Some(format!("{} {:?}", h.status, h.headers));
                        body.extend_from_slice(&stdout[len..]);
                    }
                    Err(e) => break Err(e.to_string()),
                }
            }
            Ok(Some(Record::End {
                app_status,
                protocol_status,
            })) => break Ok(format!("{app_status} {protocol_status}")),
        }
    };
    let mut left = buf.to_vec();
    for p in pieces {
        left.extend_from_slice(p);
    }
    Outcome {
        head,
        body,
        end,
        left,
    }
}

fn pairs(input: &[u8]) {
    let Ok(pairs) = params::decode_pairs(input) else {
        return;
    };
    let mut again = Vec::new();
    for (n, v) in &pairs {
        params::put_pair(&mut again, n, v).expect("decoded lengths fit");
    }
    // The 4-byte form may say a length below 128: same pairs, not bytes.
    assert_eq!(params::decode_pairs(&again).as_ref(), Ok(&pairs));
    let mut stream = Vec::new();
    params::put_params(&mut stream, 1, &pairs).expect("decoded lengths fit");
    // Each record holds whole pairs unless a pair is longer than a record.
    let mut joined = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let h = Header::parse(stream[at..at + 8].try_into().expect("8 bytes"));
        let content = &stream[at + 8..at + 8 + usize::from(h.content_length)];
        if pairs.iter().all(|(n, v)| n.len() + v.len() < 65535 - 8) {
            assert!(
                params::decode_pairs(content).is_ok(),
                "a pair cut between records"
            );
        }
        joined.extend_from_slice(content);
        at += 8 + h.body_len();
    }
    assert_eq!(params::decode_pairs(&joined).as_ref(), Ok(&pairs));
}

fuzz_target!(|data: &[u8]| {
    let (cuts, rest) = common::cuts_and_payload(data);
    let Some((&mode, input)) = rest.split_first() else {
        return;
    };
    if mode % 2 == 1 {
        pairs(input);
        return;
    }
    let whole = run(vec![input]);
    assert_eq!(
        run(common::pieces(input, &cuts)),
        whole,
        "the reads changed the outcome"
    );
    assert_eq!(
        run(input.chunks(1).collect()),
        whole,
        "byte-by-byte reads changed the outcome"
    );
    assert!(
        whole.body.len() + whole.left.len() <= input.len(),
        "more out than in"
    );
});
