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
    let (service, events) = open(&node, &name, blocking, "req", "resp")?;
    let server = service
        .server_builder()
        .initial_max_slice_len(size)
        .create()
        .map_err(|e| err("server")(Box::new(e)))?;
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
            Some(Events {
                listener, notifier, ..
            }) => {
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

type EventService = iceoryx2::service::port_factory::event::PortFactory<ipc::Service>;
type RequestResponse = iceoryx2::service::port_factory::request_response::PortFactory<
    ipc::Service,
    [u8],
    (),
    [u8],
    (),
>;

/// The blocking mode's side of the two event services `<name>/req` and `<name>/resp`: this
/// side's listener and notifier, and the services they belong to.
struct Events {
    listener: iceoryx2::port::listener::Listener<ipc::Service>,
    notifier: iceoryx2::port::notifier::Notifier<ipc::Service>,
    _services: (EventService, EventService),
}

/// The request-response service `name` and, when `blocking`, the event services: this side
/// listens on `<name>/<listen>` and notifies on `<name>/<notify>`.
fn open(
    node: &Node<ipc::Service>,
    name: &str,
    blocking: bool,
    listen: &str,
    notify: &str,
) -> Result<(RequestResponse, Option<Events>), String> {
    let service = node
        .service_builder(&service_name(name)?)
        .request_response::<[u8], [u8]>()
        .open_or_create()
        .map_err(|e| err("request-response service")(Box::new(e)))?;
    let events = if blocking {
        let listen = event_service(node, &format!("{name}/{listen}"))?;
        let notify = event_service(node, &format!("{name}/{notify}"))?;
        Some(Events {
            listener: listen
                .listener_builder()
                .create()
                .map_err(|e| err("listener")(Box::new(e)))?,
            notifier: notify
                .notifier_builder()
                .create()
                .map_err(|e| err("notifier")(Box::new(e)))?,
            _services: (listen, notify),
        })
    } else {
        None
    };
    Ok((service, events))
}

fn event_service(node: &Node<ipc::Service>, name: &str) -> Result<EventService, String> {
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
    let (service, events) = open(&node, &name, blocking, "resp", "req")?;
    let client = service
        .client_builder()
        .initial_max_slice_len(size)
        .create()
        .map_err(|e| err("client")(Box::new(e)))?;
    let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let round_trip = || -> Result<(), String> {
        let request = client
            .loan_slice_uninit(size)
            .map_err(|e| err("loan")(Box::new(e)))?;
        let pending = request
            .write_from_slice(&payload)
            .send()
            .map_err(|e| err("send")(Box::new(e)))?;
        if let Some(Events { notifier, .. }) = &events {
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
                Some(Events { listener, .. }) => {
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
