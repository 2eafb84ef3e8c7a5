//! Writing families and series into a `prometheus-client` encoder.

use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::{KIND_LABELS, LinkSnapshot, N_KINDS};

/// The data-path families of a side (`prefix` is `ferry_server` or `ferry_client`).
pub(crate) fn link_totals(
    enc: &mut DescriptorEncoder<'_>,
    prefix: &str,
    s: &LinkSnapshot,
) -> fmt::Result {
    let by_kind = |v: &[u64; N_KINDS]| -> Vec<(Vec<(&'static str, &'static str)>, u64)> {
        (0..N_KINDS)
            .map(|k| (vec![("kind", KIND_LABELS[k])], v[k]))
            .collect()
    };
    counter(
        enc,
        &format!("{prefix}_messages_received"),
        "Messages received from the rings, by kind (a fragmented message counts once).",
        &by_kind(&s.received_messages),
    )?;
    counter(
        enc,
        &format!("{prefix}_received_bytes"),
        "Payload bytes received from the rings, by kind (frame headers not included).",
        &by_kind(&s.received_bytes),
    )?;
    counter(
        enc,
        &format!("{prefix}_messages_sent"),
        "Messages sent into the rings, by kind (a fragmented message counts once).",
        &by_kind(&s.sent_messages),
    )?;
    counter(
        enc,
        &format!("{prefix}_sent_bytes"),
        "Payload bytes sent into the rings, by kind (frame headers not included).",
        &by_kind(&s.sent_bytes),
    )?;
    counter(
        enc,
        &format!("{prefix}_ring_full"),
        "Sends that found the outgoing ring full (then waited, or kept the answer pending).",
        &[(vec![], s.ring_full)],
    )?;
    counter(
        enc,
        &format!("{prefix}_wakeups_sent"),
        "Wake-ups delivered to the peer (it was asleep on the ring), by mechanism.",
        &[
            (vec![("mechanism", "futex")], s.wakes_futex),
            (vec![("mechanism", "doorbell")], s.wakes_doorbell),
        ],
    )?;
    counter(
        enc,
        &format!("{prefix}_wakeups_received"),
        "Doorbell wake-ups received by the idle reader (server worker, client monitor thread).",
        &[(vec![], s.wakeups_received)],
    )
}

pub(crate) type Series<'a> = [(Vec<(&'static str, &'a str)>, u64)];

pub(crate) fn counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &Series<'_>,
) -> fmt::Result {
    family(enc, name, help, MetricType::Counter, series)
}

pub(crate) fn gauge(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &Series<'_>,
) -> fmt::Result {
    family(enc, name, help, MetricType::Gauge, series)
}

pub(crate) fn family(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    ty: MetricType,
    series: &Series<'_>,
) -> fmt::Result {
    if series.is_empty() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, None, ty)?;
    for (labels, value) in series {
        let labels: &[(&str, &str)] = labels;
        if labels.is_empty() {
            write_value(&mut m, ty, *value)?;
        } else {
            let mut f = m.encode_family(&labels)?;
            write_value(&mut f, ty, *value)?;
        }
    }
    Ok(())
}

pub(crate) fn write_value(
    m: &mut prometheus_client::encoding::MetricEncoder<'_>,
    ty: MetricType,
    value: u64,
) -> fmt::Result {
    match ty {
        MetricType::Gauge => m.encode_gauge(&i64::try_from(value).unwrap_or(i64::MAX)),
        _ => m.encode_counter::<NoLabelSet, u64, u64>(&value, None),
    }
}
