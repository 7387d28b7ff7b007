//! Framer: any byte stream must frame without panicking, consumed lengths must match the
//! cell sizes, and re-encoding a framed cell must reproduce its bytes.
#![no_main]
use fors::cell::{Cell, CellMut, Framer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, input)) = data.split_first() else {
        return;
    };
    let framer = match sel % 4 {
        0 => Framer::unnegotiated(),
        1 => Framer::negotiated(3).unwrap(),
        2 => Framer::negotiated(4).unwrap(),
        _ => Framer::negotiated(5).unwrap(),
    };
    let mut rest = input;
    let mut out = vec![0u8; 7 + 65535];
    while let Ok(Some((cell, used))) = framer.next(rest) {
        assert!(used <= rest.len());
        let n = match cell {
            Cell::Fixed(c) => {
                assert_eq!(used, framer.fixed_cell_len());
                framer
                    .encode_fixed(c.circ_id, c.cmd, c.body, &mut out)
                    .unwrap()
            }
            Cell::Var(c) => framer
                .encode_var(c.circ_id, c.cmd, c.body, &mut out)
                .unwrap(),
        };
        assert_eq!(&out[..n], &rest[..used]);
        rest = &rest[used..];
    }
    // The mutable view must frame exactly like the shared one.
    let mut copy = input.to_vec();
    let a = framer
        .next(input)
        .map(|o| o.map(|(c, u)| (c.cmd(), c.circ_id(), u)));
    let b = framer.next_mut(&mut copy).map(|o| {
        o.map(|(c, u)| match c {
            CellMut::Fixed(f) => (f.cmd, f.circ_id, u),
            CellMut::Var(v) => (v.cmd, v.circ_id, u),
        })
    });
    assert_eq!(a, b);
});
