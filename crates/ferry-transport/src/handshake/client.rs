//! The client side of the connection handshake.

use std::sync::{Arc, Mutex};

use ferry_frame::{Hello, Kind, Welcome};
use ferry_ring::{Consumer, Producer};

use crate::error::Error;
use crate::link::{Layout, Liveness, Rx, Tx};
use crate::metrics::LinkCounters;
use crate::sys::{Control, Endpoint};

use crate::client::{ClientConfig, Conn};
use crate::error::decode_error;

/// Connects and performs the handshake.
pub(crate) fn handshake(endpoint: &Endpoint, config: &ClientConfig) -> Result<Conn, Error> {
    let (mut control, server) = Control::connect(endpoint, config.connect_timeout, "client")?;
    let hello = Hello::new(config.limits);
    control.send(Kind::Hello, 0, &hello.to_bytes())?;
    let Some(frame) = control.recv()? else {
        return Err(Error::Closed("the server hung up during the handshake"));
    };
    match frame.header.kind() {
        Kind::Welcome => {}
        Kind::Refuse => {
            let (code, message) = decode_error(&frame.payload);
            return Err(Error::Refused { code, message });
        }
        other => return Err(Error::Protocol(format!("expected Welcome, got {other}"))),
    }
    let welcome = Welcome::decode(&frame.payload)
        .map_err(|e| Error::Protocol(format!("bad Welcome: {e}")))?;
    hello
        .check_welcome(&welcome)
        .map_err(|e| Error::Protocol(format!("unacceptable Welcome: {e}")))?;
    let layout = Layout::new(&welcome.limits).map_err(Error::Protocol)?;
    let (mem, server_bell, bell) = control.receive_connection(frame, layout.total)?;
    let mem = Arc::new(mem);
    let (c2s, s2c) = layout.slices(&mem);
    #[cfg(windows)]
    let s2c_ring = s2c.clone();
    let producer = Producer::attach(c2s).map_err(|e| Error::BadSharedMemory(e.to_string()))?;
    let consumer = Consumer::attach(s2c).map_err(|e| Error::BadSharedMemory(e.to_string()))?;
    control.established(false)?;
    let metrics = Arc::new(LinkCounters::default());
    let rx = Rx::new(
        consumer,
        server_bell.try_clone()?,
        &welcome.limits,
        metrics.clone(),
    );
    Ok(Conn {
        tx: Tx::new(
            producer,
            server_bell,
            &welcome.limits,
            config.policy,
            metrics.clone(),
        )
        .with_own_bell(bell.try_clone()?),
        #[cfg(windows)]
        rx_word: crate::link::RxWord::new(s2c_ring, &rx),
        rx: Mutex::new(rx),
        live: Liveness::default(),
        control,
        bell,
        limits: welcome.limits,
        monitor: Mutex::new(None),
        metrics,
        server_pid: server.pid,
    })
}
