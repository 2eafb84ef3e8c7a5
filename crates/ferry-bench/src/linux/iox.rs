//! The iceoryx2 peer (feature `iceoryx2`): request → response over iceoryx2's own
//! request-response service (`[u8]` slices of the scenario's size), in its two waiting modes:
//!
//! - `iceoryx2` (polling): the server polls `Server::receive`, the client polls
//!   `PendingResponse::receive`, both spinning (as iceoryx2's request-response has no blocking
//!   receive of its own).
//! - `iceoryx2-block` (blocking): each side also opens an iceoryx2 event service and sleeps on
//!   its `Listener` until the other side's `Notifier` signals a request (or a response).

use iceoryx2::prelude::*;

use crate::measure::{self, Outcome, Scenario};
use crate::opts::Opts;

type E = Box<dyn std::error::Error>;

fn err(what: &str) -> impl Fn(E) -> String + '_ {
    move |e| format!("iceoryx2 {what}: {e}")
}

fn service_name(s: &str) -> Result<ServiceName, String> {
    ServiceName::new(s).map_err(|e| format!("iceoryx2 service name `{s}`: {e:?}"))
}

fn node() -> Result<Node<ipc::Service>, String> {
    // Its default configuration is what we measure; the warning that no config file was
    // loaded is noise in the harness's output.
    set_log_level(LogLevel::Error);
    NodeBuilder::new()
        .create::<ipc::Service>()
        .map_err(|e| format!("iceoryx2 node: {e}"))
}

/// `serve iceoryx2 --name N --size S --wait poll|block`.
pub fn serve(opts: &Opts) -> Result<(), String> {
    let name = opts.str("name")?.to_owned();
    let size = usize::try_from(opts.num("size", 64)?).map_err(|e| e.to_string())?;
    let blocking = opts.str_or("wait", "poll") == "block";
    let node = node()?;
    let service = node
        .service_builder(&service_name(&name)?)
        .request_response::<[u8], [u8]>()
        .open_or_create()
        .map_err(|e| err("request-response service")(Box::new(e)))?;
    let server = service
        .server_builder()
        .initial_max_slice_len(size)
        .create()
        .map_err(|e| err("server")(Box::new(e)))?;
    let events = if blocking {
        let req = event_service(&node, &format!("{name}/req"))?;
        let resp = event_service(&node, &format!("{name}/resp"))?;
        let listener = req
            .listener_builder()
            .create()
            .map_err(|e| err("listener")(Box::new(e)))?;
        let notifier = resp
            .notifier_builder()
            .create()
            .map_err(|e| err("notifier")(Box::new(e)))?;
        Some((req, resp, listener, notifier))
    } else {
        None
    };
    println!("ready t_ns={}", measure::monotonic_ns());
    std::thread::spawn(|| measure::serve_stdin(String::new));
    loop {
        let mut answered = false;
        while let Some(active) = server.receive().map_err(|e| err("receive")(Box::new(e)))? {
            let len = active.payload().len();
            let response = active
                .loan_slice_uninit(len)
                .map_err(|e| err("loan")(Box::new(e)))?;
            let response = response.write_from_slice(active.payload());
            response.send().map_err(|e| err("send")(Box::new(e)))?;
            answered = true;
        }
        match &events {
            Some((_, _, listener, notifier)) => {
                if answered {
                    notifier.notify().map_err(|e| err("notify")(Box::new(e)))?;
                } else {
                    listener
                        .blocking_wait(|_| {})
                        .map_err(|e| err("wait")(Box::new(e)))?;
                }
            }
            None => std::hint::spin_loop(),
        }
    }
}

fn event_service(
    node: &Node<ipc::Service>,
    name: &str,
) -> Result<iceoryx2::service::port_factory::event::PortFactory<ipc::Service>, String> {
    node.service_builder(&service_name(name)?)
        .event()
        .open_or_create()
        .map_err(|e| err("event service")(Box::new(e)))
}

/// `client iceoryx2|iceoryx2-block rtt --name N --size S`.
pub fn client(
    transport: &str,
    scenario: &Scenario,
    opts: &Opts,
) -> Result<(Outcome, Node<ipc::Service>), String> {
    let Scenario::Rtt {
        size,
        samples,
        warmup,
    } = *scenario
    else {
        return Err("the iceoryx2 peer measures round trips (`rtt`) only".into());
    };
    let blocking = transport == "iceoryx2-block";
    let name = opts.str("name")?.to_owned();
    let node = node()?;
    let service = node
        .service_builder(&service_name(&name)?)
        .request_response::<[u8], [u8]>()
        .open_or_create()
        .map_err(|e| err("request-response service")(Box::new(e)))?;
    let client = service
        .client_builder()
        .initial_max_slice_len(size)
        .create()
        .map_err(|e| err("client")(Box::new(e)))?;
    let events = if blocking {
        let req = event_service(&node, &format!("{name}/req"))?;
        let resp = event_service(&node, &format!("{name}/resp"))?;
        let notifier = req
            .notifier_builder()
            .create()
            .map_err(|e| err("notifier")(Box::new(e)))?;
        let listener = resp
            .listener_builder()
            .create()
            .map_err(|e| err("listener")(Box::new(e)))?;
        Some((req, resp, notifier, listener))
    } else {
        None
    };
    let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let round_trip = || -> Result<(), String> {
        let request = client
            .loan_slice_uninit(size)
            .map_err(|e| err("loan")(Box::new(e)))?;
        let pending = request
            .write_from_slice(&payload)
            .send()
            .map_err(|e| err("send")(Box::new(e)))?;
        if let Some((_, _, notifier, _)) = &events {
            notifier.notify().map_err(|e| err("notify")(Box::new(e)))?;
        }
        loop {
            if let Some(response) = pending.receive().map_err(|e| err("receive")(Box::new(e)))? {
                if *response.payload() != *payload {
                    return Err("an iceoryx2 echo differs from its request".into());
                }
                return Ok(());
            }
            match &events {
                Some((_, _, _, listener)) => {
                    listener
                        .blocking_wait(|_| {})
                        .map_err(|e| err("wait")(Box::new(e)))?;
                }
                None => std::hint::spin_loop(),
            }
        }
    };
    let outcome = measure::sequential(opts, samples, warmup, size as u64, round_trip)?;
    drop(events);
    drop(client);
    drop(service);
    Ok((outcome, node))
}
