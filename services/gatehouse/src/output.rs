//! What client commands (`ctl`, `openapi`, `check`) write to stdout. A
//! reader that goes away (`gatehouse ctl hosts list | head`) ends the
//! command quietly with success, as a Unix filter does, instead of the
//! panic `println!` gives on a broken pipe.

use std::io::Write;

/// Writes `text` and a newline to stdout; exits quietly (status 0) if the
/// reader has gone, with status 74 on any other write error.
pub fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    let written = out
        .write_all(text.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("gatehouse: writing to stdout: {e}");
            std::process::exit(74);
        }
    }
}
