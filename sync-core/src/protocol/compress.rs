//! Compressed frames (issue 13): a frame as [`wire::encode`] makes it (version byte, then the
//! message), compressed with zstd when that makes it smaller, behind a byte no message version
//! uses ([`COMPRESSED_FRAME`]), so an older peer refuses it as an unsupported version instead
//! of misreading it.
//!
//! ```text
//! 0x7A  codec (1: zstd; 2: zstd with DICTIONARY)  zstd frame of: version byte, postcard message
//! ```
//!
//! Negotiation is the hello itself: a device that takes compressed frames sends its hello
//! compressed, and the server compresses what it sends to that device only; a device that said
//! a plain hello is never sent a compressed frame. A server from before compressed frames
//! closes such a hello with `UnsupportedVersion`; the device then speaks plain to that server
//! (for [`PLAIN_RETRY_MS`], then tries again: the server may have been upgraded).
//!
//! Every inflation is bounded before it runs: at most [`MAX_MESSAGE_BYTES`] out (one byte more
//! and it stops: `TooLarge`), a window of at most 2^[`WINDOW_LOG_MAX`] bytes (a frame asking
//! for more is refused before anything is allocated), one zstd frame, nothing after it, and the
//! inflated frame must be a plain one (no compression inside compression).
//!
//! Each frame is compressed on its own (no state across frames): a server holding thousands
//! of quiet connections keeps no compression context per connection. The dictionary trained on
//! this protocol's own frames (`compress_dict.rs`) makes up much of what that costs on small
//! frames (a live edit's upload: about 40% fewer bytes than zstd alone).
//!
//! The zstd contexts (the work space of compressing and inflating) are kept one per thread and
//! reused for every frame that thread handles, instead of being made and dropped per frame:
//! the bytes are the same (each frame still starts from a reset context and the dictionary),
//! the memory is bounded by the number of threads, not of connections.
//!
//! Small frames (a live edit's upload and its relay, at most [`SMALL_FRAME`] bytes) are
//! compressed at [`SMALL_LEVEL`], larger ones (a day's upload, a catch-up's or a reconnection's
//! batches) at [`LEVEL`]. On the dictionary's own test day a one-change frame (1.8 kB on
//! average) costs about 4 us at level 3 against 24 us at level 9, for 14 bytes more (3.6%): on
//! a live edit's path (compressed by the writer and again by the server) that time is latency,
//! while 14 bytes are under 2 ms on a 64 kbit/s link whose round trip is hundreds. A 32 KiB
//! frame gains 5% at level 9 (1.2 kB, 150 ms on that link), which is what a weak link's day
//! waits on; a reconnection's batch of a few changes (2.4 kB) keeps level 9's 5% too.
//!
//! A server short of CPU (steps queue for it: a team at base, all at once) compresses what goes
//! to a device whose link is fast at [`SMALL_LEVEL`] whatever the size ([`Effort::Quick`]):
//! there the devices wait on the server's CPU, not on bytes (level 9 was 44% of the server's
//! commit thread in S8, a tenth of all the work; session 32). A weak link keeps level 9
//! whatever the server's load: the server decides (`protocol/server`), this module only
//! compresses.

use std::borrow::Cow;

use super::wire::{MAX_MESSAGE_BYTES, WireError};

/// The first byte of a compressed frame: outside every message version, so a peer that does
/// not know compressed frames closes with `UnsupportedVersion`.
pub const COMPRESSED_FRAME: u8 = 0x7A;
/// The codec byte after [`COMPRESSED_FRAME`]: zstd, without a dictionary.
pub const CODEC_ZSTD: u8 = 1;
/// zstd with [`DICTIONARY`] (what this build sends).
pub const CODEC_ZSTD_DICT: u8 = 2;
/// The dictionary of [`CODEC_ZSTD_DICT`], trained on this protocol's own frames
/// (`compress_dict.rs` says how; 16 KiB). Fixed for the codec: another needs another byte.
pub const DICTIONARY: &[u8] = include_bytes!("zstd-dict-1.bin");
/// Frames of at most this many bytes go plain (acknowledgements, clocks): compressing them
/// saves nothing.
pub const COMPRESS_ABOVE: usize = 96;
/// zstd's level for frames above [`SMALL_FRAME`]: the gain past it is a few percent for several
/// times the work.
pub const LEVEL: i32 = 9;
/// zstd's level for frames of at most [`SMALL_FRAME`] bytes (see the module).
pub const SMALL_LEVEL: i32 = 3;
/// The largest frame compressed at [`SMALL_LEVEL`].
pub const SMALL_FRAME: usize = 2 * 1024;
/// The largest window a compressed frame may ask for (2^22 = 4 MiB, the largest message).
pub const WINDOW_LOG_MAX: u32 = 22;
/// How long (device ms) a device speaks plain to a server that refused a compressed hello.
pub const PLAIN_RETRY_MS: i64 = 24 * 3_600_000;

/// Is `bytes` a compressed frame?
pub fn is_compressed(bytes: &[u8]) -> bool {
    bytes.first() == Some(&COMPRESSED_FRAME)
}

/// How hard a frame above [`SMALL_FRAME`] is compressed (one of at most that size always takes
/// [`SMALL_LEVEL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Effort {
    /// [`LEVEL`]: the fewest bytes, for a link that waits on them.
    #[default]
    Full,
    /// [`SMALL_LEVEL`]: about a quarter of the work for about 5% more bytes, for a fast link
    /// from a server whose CPU is what its devices wait on.
    Quick,
}

/// `frame` compressed, if that makes it smaller; otherwise `frame` itself.
pub fn pack(frame: Vec<u8>) -> Vec<u8> {
    pack_with(frame, Effort::Full)
}

/// [`pack`] at `effort`.
pub fn pack_with(frame: Vec<u8>, effort: Effort) -> Vec<u8> {
    if frame.len() <= COMPRESS_ABOVE {
        return frame;
    }
    match compressed(&frame, effort) {
        Some(sealed) if sealed.len() < frame.len() => sealed,
        _ => frame,
    }
}

/// `frame` compressed, whatever its size (a hello: compressed, it says the device takes
/// compressed frames).
pub fn seal(frame: Vec<u8>) -> Vec<u8> {
    compressed(&frame, Effort::Full).unwrap_or(frame)
}

/// `frame` as a compressed frame; `None` if zstd failed (it cannot on a buffer in memory;
/// were it to, the frame goes plain).
fn compressed(frame: &[u8], effort: Effort) -> Option<Vec<u8>> {
    let body = with_compressor(Size::of(frame, effort), |c| c.compress(frame)).ok()?;
    let mut out = Vec::with_capacity(body.len() + 2);
    out.push(COMPRESSED_FRAME);
    out.push(CODEC_ZSTD_DICT);
    out.extend_from_slice(&body);
    Some(out)
}

/// Which of the two levels a frame is compressed at; the discriminant indexes the per-level
/// contexts and dictionaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Size {
    /// At most [`SMALL_FRAME`] bytes, or [`Effort::Quick`]: [`SMALL_LEVEL`].
    Small = 0,
    /// [`LEVEL`].
    Large = 1,
}

impl Size {
    fn of(frame: &[u8], effort: Effort) -> Size {
        if frame.len() <= SMALL_FRAME || effort == Effort::Quick {
            Size::Small
        } else {
            Size::Large
        }
    }

    fn level(self) -> i32 {
        match self {
            Size::Small => SMALL_LEVEL,
            Size::Large => LEVEL,
        }
    }
}

type Compressor = zstd::bulk::Compressor<'static>;

thread_local! {
    /// This thread's compression contexts, one per [`Size`], each set up with its
    /// [`encoder_dictionary`] once.
    static COMPRESSORS: std::cell::RefCell<[Option<Compressor>; 2]> =
        const { std::cell::RefCell::new([None, None]) };
    /// This thread's inflation context (set up again for each frame: it is cheap, the memory
    /// is what is kept).
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::zstd_safe::DCtx<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` with this thread's compressor for `size` (made on first use). A context that failed
/// is dropped, so the next frame starts from a fresh one.
fn with_compressor<T>(
    size: Size,
    f: impl FnOnce(&mut Compressor) -> std::io::Result<T>,
) -> std::io::Result<T> {
    COMPRESSORS.with(|cell| {
        let Ok(mut slots) = cell.try_borrow_mut() else {
            // Not reentrant; were it ever, a context of its own.
            return f(&mut Compressor::with_prepared_dictionary(
                encoder_dictionary(size),
            )?);
        };
        let slot = &mut slots[size as usize];
        let mut c = match slot.take() {
            Some(c) => c,
            None => Compressor::with_prepared_dictionary(encoder_dictionary(size))?,
        };
        let out = f(&mut c);
        if out.is_ok() {
            *slot = Some(c);
        }
        out
    })
}

/// Prepares [`DICTIONARY`] for both levels and for inflating, once per process (later calls
/// do nothing): a server calls it as it starts, so that the first frames it compresses do not
/// pay for it on a device's path (on a small frame, preparing the dictionary costs several
/// times the compression itself).
pub fn prepare() {
    encoder_dictionary(Size::Small);
    encoder_dictionary(Size::Large);
    decoder_dictionary();
}

/// [`DICTIONARY`] prepared once per process for `size`'s level: loading it is most of the work
/// of compressing a small frame.
fn encoder_dictionary(size: Size) -> &'static zstd::dict::EncoderDictionary<'static> {
    static PREPARED: [std::sync::OnceLock<zstd::dict::EncoderDictionary<'static>>; 2] =
        [std::sync::OnceLock::new(), std::sync::OnceLock::new()];
    PREPARED[size as usize]
        .get_or_init(|| zstd::dict::EncoderDictionary::copy(DICTIONARY, size.level()))
}

fn decoder_dictionary() -> &'static zstd::dict::DecoderDictionary<'static> {
    static PREPARED: std::sync::OnceLock<zstd::dict::DecoderDictionary<'static>> =
        std::sync::OnceLock::new();
    PREPARED.get_or_init(|| zstd::dict::DecoderDictionary::copy(DICTIONARY))
}

/// The plain frame in `bytes`: a compressed frame inflated (bounded, see the module), any other
/// frame as it is.
pub fn unpack(bytes: &[u8]) -> Result<Cow<'_, [u8]>, WireError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge(bytes.len()));
    }
    let Some((&first, rest)) = bytes.split_first() else {
        return Err(WireError::Empty);
    };
    if first != COMPRESSED_FRAME {
        return Ok(Cow::Borrowed(bytes));
    }
    let Some((&codec, body)) = rest.split_first() else {
        return Err(WireError::Malformed(
            "compressed frame without a codec".into(),
        ));
    };
    let frame = match codec {
        CODEC_ZSTD => inflate(body, None)?,
        CODEC_ZSTD_DICT => inflate(body, Some(decoder_dictionary()))?,
        _ => return Err(WireError::Malformed(format!("unknown frame codec {codec}"))),
    };
    if is_compressed(&frame) {
        return Err(WireError::Malformed(
            "a compressed frame inside a compressed frame".into(),
        ));
    }
    Ok(Cow::Owned(frame))
}

/// Inflates one zstd frame into at most [`MAX_MESSAGE_BYTES`], with this thread's context.
fn inflate(
    body: &[u8],
    dictionary: Option<&zstd::dict::DecoderDictionary<'static>>,
) -> Result<Vec<u8>, WireError> {
    DECOMPRESSOR.with(|cell| {
        let Ok(mut slot) = cell.try_borrow_mut() else {
            return inflate_with(&mut zstd::zstd_safe::DCtx::create(), body, dictionary);
        };
        let mut dctx = slot.take().unwrap_or_else(zstd::zstd_safe::DCtx::create);
        let out = inflate_with(&mut dctx, body, dictionary);
        // Reset before each use: a context that failed is as good as a new one.
        *slot = Some(dctx);
        out
    })
}

/// Inflates one zstd frame with `dctx` (reset first), bounded as the module says.
fn inflate_with(
    dctx: &mut zstd::zstd_safe::DCtx<'static>,
    body: &[u8],
    dictionary: Option<&zstd::dict::DecoderDictionary<'static>>,
) -> Result<Vec<u8>, WireError> {
    use zstd::zstd_safe::{DParameter, InBuffer, OutBuffer, ResetDirective};
    let malformed = |code: usize| {
        WireError::Malformed(format!(
            "compressed frame: {}",
            zstd::zstd_safe::get_error_name(code)
        ))
    };
    dctx.reset(ResetDirective::SessionAndParameters)
        .map_err(malformed)?;
    // A frame asking for a larger window is refused before anything is allocated.
    dctx.set_parameter(DParameter::WindowLogMax(WINDOW_LOG_MAX))
        .map_err(malformed)?;
    // The reset dropped the last frame's dictionary; `dictionary` is static, so the context
    // may keep referring to it.
    if let Some(d) = dictionary {
        dctx.ref_ddict(d.as_ddict()).map_err(malformed)?;
    }
    // One byte more than a message may have: reaching it means too large.
    let limit = MAX_MESSAGE_BYTES + 1;
    let mut out: Vec<u8> = Vec::with_capacity(body.len().saturating_mul(4).clamp(1024, limit));
    let mut input = InBuffer::around(body);
    loop {
        if out.len() == out.capacity() {
            let grow = out.capacity().min(limit - out.len());
            out.reserve_exact(grow);
        }
        let filled = out.len();
        let hint = {
            let mut output = OutBuffer::around_pos(&mut out, filled);
            dctx.decompress_stream(&mut output, &mut input)
                .map_err(malformed)?
        };
        if out.len() > MAX_MESSAGE_BYTES {
            return Err(WireError::TooLarge(out.len()));
        }
        if hint == 0 {
            break;
        }
        // Everything read and room left: the frame ends before its end.
        if input.pos() == body.len() && out.len() < out.capacity() {
            return Err(WireError::Malformed(
                "compressed frame: the frame is cut short".into(),
            ));
        }
    }
    // One frame, and nothing after it.
    if input.pos() != body.len() {
        return Err(WireError::Malformed(
            "bytes after the compressed frame".into(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::protocol::wire::{self, DeviceMessage};

    #[test]
    fn a_frame_round_trips_and_small_ones_stay_plain() {
        let msg = DeviceMessage::ReadLog {
            entries: (0..50)
                .map(|i| wire::ReadEntry {
                    patient: crate::ids::PatientId::new("p-1").unwrap(),
                    what: "chart".into(),
                    at_ms: i,
                })
                .collect(),
        };
        let frame = wire::encode(&msg).unwrap();
        let packed = pack(frame.clone());
        assert!(is_compressed(&packed));
        assert!(packed.len() < frame.len() / 2);
        assert_eq!(unpack(&packed).unwrap().as_ref(), frame.as_slice());
        let ack = wire::encode(&DeviceMessage::BatchAck { batch: 3 }).unwrap();
        assert_eq!(pack(ack.clone()), ack);
        assert_eq!(unpack(&ack).unwrap().as_ref(), ack.as_slice());
    }

    /// The thread's reused contexts give the bytes a fresh context gives, frame after frame,
    /// and a frame that failed to inflate leaves the next one unharmed.
    #[test]
    fn reused_contexts_make_the_same_bytes_as_fresh_ones() {
        let fresh = |frame: &[u8]| {
            let mut c = zstd::bulk::Compressor::with_prepared_dictionary(encoder_dictionary(
                Size::of(frame, Effort::Full),
            ))
            .unwrap();
            let mut out = vec![COMPRESSED_FRAME, CODEC_ZSTD_DICT];
            out.extend(c.compress(frame).unwrap());
            out
        };
        let frames: Vec<Vec<u8>> = [50usize, 3_000, 120, 40_000, 700, 5]
            .iter()
            .map(|&n| {
                let msg = DeviceMessage::ReadLog {
                    entries: (0..n as i64)
                        .map(|i| wire::ReadEntry {
                            patient: crate::ids::PatientId::new(format!("p-{}", i % 7)).unwrap(),
                            what: "chart".into(),
                            at_ms: i * 31,
                        })
                        .collect(),
                };
                wire::encode(&msg).unwrap()
            })
            .collect();
        for _ in 0..2 {
            for frame in &frames {
                let sealed = seal(frame.clone());
                assert_eq!(sealed, fresh(frame));
                assert_eq!(unpack(&sealed).unwrap().as_ref(), frame.as_slice());
                // A broken frame in between: refused, and the next one inflates.
                let cut = &sealed[..sealed.len() / 2];
                assert!(unpack(cut).is_err());
                let mut plain = vec![COMPRESSED_FRAME, CODEC_ZSTD];
                plain.extend(zstd::bulk::compress(frame, 3).unwrap());
                assert_eq!(unpack(&plain).unwrap().as_ref(), frame.as_slice());
            }
        }
    }

    /// A frame of up to `SMALL_FRAME` bytes (a live edit's size) is compressed at the fast
    /// level, a larger one (a catch-up's size) at the high one, each exactly as a context
    /// prepared at that level alone makes it.
    #[test]
    fn small_frames_take_the_fast_level_and_large_ones_the_high_one() {
        let at = |level: i32, frame: &[u8]| {
            let dict = zstd::dict::EncoderDictionary::copy(DICTIONARY, level);
            let mut c = zstd::bulk::Compressor::with_prepared_dictionary(&dict).unwrap();
            let mut out = vec![COMPRESSED_FRAME, CODEC_ZSTD_DICT];
            out.extend(c.compress(frame).unwrap());
            out
        };
        let frame = |n: i64| {
            wire::encode(&DeviceMessage::ReadLog {
                entries: (0..n)
                    .map(|i| wire::ReadEntry {
                        patient: crate::ids::PatientId::new(format!("p-{}", i % 13)).unwrap(),
                        what: format!("chart {}", i * 7 % 101),
                        at_ms: i * 977,
                    })
                    .collect(),
            })
            .unwrap()
        };
        let (small, large) = (frame(60), frame(2_000));
        assert!(small.len() <= SMALL_FRAME && large.len() > SMALL_FRAME);
        assert_ne!(at(SMALL_LEVEL, &small), at(LEVEL, &small));
        assert_eq!(pack(small.clone()), at(SMALL_LEVEL, &small));
        assert_ne!(at(SMALL_LEVEL, &large), at(LEVEL, &large));
        assert_eq!(pack(large.clone()), at(LEVEL, &large));
        // Quick: the fast level whatever the size; what it makes inflates back.
        assert_eq!(pack_with(large.clone(), Effort::Full), at(LEVEL, &large));
        let quick = pack_with(large.clone(), Effort::Quick);
        assert_eq!(quick, at(SMALL_LEVEL, &large));
        assert_eq!(unpack(&quick).unwrap().as_ref(), large.as_slice());
        assert_eq!(
            pack_with(small.clone(), Effort::Quick),
            at(SMALL_LEVEL, &small)
        );
    }

    #[test]
    fn a_bomb_is_refused_before_it_inflates_past_the_limit() {
        // 64 MiB of zeros compress to a few kilobytes.
        let zeros = vec![0u8; 64 * 1024 * 1024];
        let mut bomb = vec![COMPRESSED_FRAME, CODEC_ZSTD];
        bomb.extend(zstd::bulk::compress(&zeros, 1).unwrap());
        assert!(bomb.len() < 64 * 1024);
        assert!(matches!(unpack(&bomb), Err(WireError::TooLarge(_))));
        // Exactly at the limit is a message size, not a bomb.
        let mut at_limit = vec![1u8];
        at_limit.resize(MAX_MESSAGE_BYTES, 0);
        let packed = pack(at_limit.clone());
        assert_eq!(unpack(&packed).unwrap().len(), MAX_MESSAGE_BYTES);
    }

    #[test]
    fn bad_compressed_frames_are_typed_errors() {
        let frame = wire::encode(&DeviceMessage::ReadLog { entries: vec![] }).unwrap();
        let mut big = frame.clone();
        big.extend(vec![0u8; 500]);
        let packed = pack(big);
        for bad in [
            vec![COMPRESSED_FRAME],
            vec![COMPRESSED_FRAME, 9, 1, 2, 3],
            vec![COMPRESSED_FRAME, CODEC_ZSTD, 1, 2, 3],
            packed[..packed.len() - 3].to_vec(),
            [packed.clone(), packed.clone()].concat(),
        ] {
            assert!(
                matches!(unpack(&bad), Err(WireError::Malformed(_))),
                "{bad:?}"
            );
        }
        // Compression inside compression.
        let mut twice = vec![COMPRESSED_FRAME, CODEC_ZSTD];
        twice.extend(zstd::bulk::compress(&packed, 3).unwrap());
        assert!(matches!(unpack(&twice), Err(WireError::Malformed(_))));
        // A window larger than any message is refused before anything is allocated.
        let mut wide = vec![COMPRESSED_FRAME, CODEC_ZSTD];
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        enc.set_parameter(zstd::zstd_safe::CParameter::WindowLog(27))
            .unwrap();
        enc.include_contentsize(false).unwrap();
        std::io::Write::write_all(&mut enc, &vec![7u8; 6 * 1024 * 1024]).unwrap();
        wide.extend(enc.finish().unwrap());
        assert!(unpack(&wide).is_err());
        assert_eq!(unpack(&[]), Err(WireError::Empty));
    }
}
