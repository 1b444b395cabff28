//! Measures the heap the diagnostics hold per well while wells train, as `serve` runs them
//! (one engine a well, readings at a fixed interval), with a counting allocator.
//! Usage: mem_probe WELLS MINUTES INTERVAL_S [FAMILY]
//! Prints, at chosen minutes, the live heap per well (bytes) and its peak so far.
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use espwatch_core::Timestamp;
use espwatch_core::diagnostics::{Thresholds, TrainingWindow, WellEngine};
use espwatch_core::sim::*;

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            if new >= l.size() {
                let now = LIVE.fetch_add(new - l.size(), Ordering::Relaxed) + new - l.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(l.size() - new, Ordering::Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static A: Counting = Counting;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let wells: usize = a[1].parse().unwrap();
    let minutes: i64 = a[2].parse().unwrap();
    let interval: i64 = a[3].parse().unwrap();
    let family: Family = a.get(4).map_or("classic", |s| s.as_str()).parse().unwrap();
    let start = Timestamp::from_secs(1_767_225_600);
    let mut cfg = FleetConfig::new(1, wells, start, minutes * 60_000_000);
    cfg.family = family;
    cfg.interval = IntervalChoice::Fixed(interval * 1_000_000);
    cfg.conditions = ConditionChoice::None;
    let plan = plan_fleet(&cfg).unwrap();
    let mut sims: Vec<WellSimulator> = plan
        .wells
        .iter()
        .map(|w| WellSimulator::new(w, cfg.start, cfg.duration_micros))
        .collect();
    let before = LIVE.load(Ordering::Relaxed);
    let mut engines: Vec<WellEngine> = plan
        .wells
        .iter()
        .map(|w| {
            WellEngine::new(
                Some(&w.meta),
                Thresholds::default(),
                TrainingWindow::Default,
            )
        })
        .collect();
    // Only the engines' heap is counted: what each push (its output dropped) leaves allocated.
    let mut engine_heap = LIVE.load(Ordering::Relaxed) - before;
    let mut peak_per_well = 0usize;
    let mut next_minute = 1;
    println!("minute engine_heap_bytes_per_well");
    loop {
        let mut any = false;
        let mut due = 0;
        for (sim, e) in sims.iter_mut().zip(engines.iter_mut()) {
            let Some(s) = sim.next_sample() else { continue };
            any = true;
            due = (s.ts.0 - start.0) / 60_000_000;
            if let Some(m) = s.measured {
                let l0 = LIVE.load(Ordering::Relaxed);
                drop(e.push(s.ts, &m));
                let l1 = LIVE.load(Ordering::Relaxed);
                engine_heap = engine_heap.wrapping_add(l1.wrapping_sub(l0));
            }
        }
        if due >= next_minute || !any {
            peak_per_well = peak_per_well.max(engine_heap / wells);
            println!("{next_minute} {} peak {peak_per_well}", engine_heap / wells);
            next_minute += 1;
        }
        if !any {
            break;
        }
    }
}
