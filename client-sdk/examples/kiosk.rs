//! A kiosk calling in: joins a call, shows the recording notice, publishes the generated test
//! pattern (or IVF/Ogg files), prints every event and a per-track packet count, and answers
//! chat. Ctrl-C leaves the call.
//!
//! ```text
//! cargo run -p client-sdk --example kiosk -- <server-url> <access-token> <call-id> [video.ivf audio.ogg]
//! # or: CW_URL=http://127.0.0.1:8080 CW_TOKEN=eyJ… CW_CALL_ID=… cargo run -p client-sdk --example kiosk
//! ```
//!
//! The token is a resident's or a device's access token; the call is one an agent opened
//! for that resident (`POST /api/v1/calls`).

use std::time::Duration;

use client_sdk::{AudioSource, Call, CallConfig, CallEvent, CallId, VideoSource};

fn arg(args: &[String], i: usize, env: &str) -> Option<String> {
    args.get(i).cloned().or_else(|| std::env::var(env).ok())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage =
        "usage: kiosk <server-url> <access-token> <call-id> [video.ivf audio.ogg] (or CW_URL, CW_TOKEN, CW_CALL_ID)";
    let url = arg(&args, 0, "CW_URL").ok_or(usage)?;
    let token = arg(&args, 1, "CW_TOKEN").ok_or(usage)?;
    let call_id: CallId = arg(&args, 2, "CW_CALL_ID").ok_or(usage)?.parse()?;
    let mut config = CallConfig::new(url, token, call_id).with_user_agent("kiosk-example/0.1");
    if let (Some(video), Some(audio)) = (args.get(3), args.get(4)) {
        config = config
            .with_video(Some(VideoSource::IvfFile(video.into())))
            .with_audio(Some(AudioSource::OggFile(audio.into())));
    }

    let (call, mut events) = Call::join(config).await?;
    println!("joined call {} as {}", call.call_id(), call.participant_id());
    let mut report = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                println!("leaving");
                call.leave().await?;
                break;
            }
            _ = report.tick() => println!("sent {} RTP packets", call.packets_sent()),
            event = events.recv() => {
                let Some(event) = event else { break };
                match event {
                    CallEvent::Joined { participants, recording, .. } => {
                        // The notice must be shown before and during the call.
                        println!("【录像提示】{}", recording.notice_zh);
                        println!("[recording] {} (kept {} days)", recording.notice_en, recording.retention_days);
                        for p in participants {
                            println!("in the call: {} ({:?})", p.display_name, p.role);
                        }
                    }
                    CallEvent::RemoteTrack(mut track) => {
                        println!("receiving {:?} from {}", track.kind, track.participant_id);
                        tokio::spawn(async move {
                            let (mut packets, mut frames, mut keyframes) = (0u64, 0u64, 0u64);
                            let mut tick = tokio::time::interval(Duration::from_secs(5));
                            loop {
                                tokio::select! {
                                    p = track.packets.recv() => {
                                        let Some(p) = p else { break };
                                        packets += 1;
                                        frames += u64::from(p.ends_frame());
                                        keyframes += u64::from(p.is_vp8_keyframe());
                                    }
                                    _ = tick.tick() => println!(
                                        "  {:?} from {}: {packets} packets, {frames} frames, {keyframes} keyframes, {} dropped",
                                        track.kind, track.participant_id, track.dropped()),
                                }
                            }
                            println!("  {:?} track from {} ended", track.kind, track.participant_id);
                        });
                    }
                    CallEvent::Chat(m) => {
                        println!("chat {}: {}", m.sender_name, m.text);
                        if !m.own {
                            call.send_chat("收到 (received)").await?;
                        }
                    }
                    CallEvent::Ended { cause } => {
                        println!("call over: {cause:?}");
                        break;
                    }
                    other => println!("{other:?}"),
                }
            }
        }
    }
    Ok(())
}
