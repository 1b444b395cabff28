//! Every number the engine judges with, with defaults from the primer and field practice.
//! Configurable globally and per well (a JSON object of overrides merged over the global set).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Diagnosis, Severity};
use crate::condition::Condition;

/// Thresholds of the diagnostics engine. Ratios are relative to the well's own healthy
/// baseline after affinity-law normalisation to the running frequency, unless noted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// Default training window (data time from a well's first reading), seconds.
    pub train_secs: f64,
    /// Running time after a start before steady-state rules apply, seconds.
    pub settle_secs: f64,
    /// After a start the operating point is at rest once the intake pressure is: its
    /// 10-minute level within `rest_pip_band` (a ratio, half the smallest intake step a rule
    /// reads) of its half-hour level for `rest_hold_secs` on end. Until then (at most
    /// `settle_max_secs` after the start) the rules that judge a departure from a steady level
    /// (head loss, leak, unloading, overload below the nameplate) wait: a PIP
    /// controller hunting after a restart swings the speed, load and head in turn, and
    /// without a frequency gauge none of it shows as a speed change.
    pub rest_pip_band: f64,
    pub rest_hold_secs: f64,
    pub settle_max_secs: f64,
    /// Evidence must persist this long (and over at least `raise_readings`) to open an episode:
    /// `raise_secs` for critical conditions (they destroy equipment within minutes), longer for
    /// major and minor ones.
    pub raise_secs: f64,
    pub raise_secs_major: f64,
    pub raise_secs_minor: f64,
    /// Evidence below this confidence (per severity) does not open an episode.
    pub min_confidence_critical: f64,
    pub min_confidence_major: f64,
    pub min_confidence_minor: f64,
    pub raise_readings: u32,
    /// Overload and motor overheat evidence that no protection trip confirms must persist this
    /// long. A motor rides out a short excess: its relay is inverse-time and its winding has
    /// thermal mass, so minutes of extra current (a sand slug passing, a well test's swing) or
    /// a winding gauge's blip harm nothing, and the drive trips on what does (a trip opens the
    /// episode at once, from its first evidence).
    pub thermal_persist_secs: f64,
    /// Gas interference evidence must persist this long: it is a cycle (slugs of gas through
    /// the pump, the load and the discharge hunting with them), told by several periods, not
    /// by minutes; a sand slug or a slug of gas passing once harms nothing.
    pub gas_interference_persist_secs: f64,
    /// Healthy running without evidence needed to close an episode, seconds.
    pub clear_secs: f64,
    /// The same for gradual conditions (wear, scale): they develop over days, so evidence
    /// missing for minutes (the ratio hovering around its bar, a transient) is not a recovery.
    pub clear_secs_gradual: f64,
    /// An open episode is closed after this long without evidence even with the pump stopped.
    pub hold_off_secs: f64,
    /// A different process condition replaces the open one after this much uncontested evidence.
    pub switch_secs: f64,
    /// Running below this share of the base frequency is treated as ramping.
    pub min_running_frequency_ratio: f64,
    /// ...unless the speed has been held (within `held_speed_band` of one value) for
    /// `settle_secs` at or above this share.
    pub min_held_frequency_ratio: f64,
    pub held_speed_band: f64,
    /// Magnetising (no-load) current as a share of nameplate amps (primer: ¼ to ⅓).
    pub no_load_share: f64,
    /// Surface flow below this share of the expected flow counts as no flow.
    pub no_flow_ratio: f64,
    /// Current ratio below which the pump is considered unloaded (near no-load).
    pub unloaded_current_ratio: f64,
    /// Discharge pressure above baseline by this ratio with no flow: deadhead.
    pub deadhead_discharge_ratio: f64,
    /// Vibration ratio below which a no-flow pump is considered not turning a load.
    pub broken_shaft_vibration_ratio: f64,
    /// GOR rise that indicates free gas reaching the pump.
    pub gas_gor_ratio: f64,
    /// Short-term variability of the current (std of the current ratio over 10 min) that
    /// counts as erratic: the larger of this and `erratic_factor` × the baseline variability.
    pub erratic_std: f64,
    pub erratic_factor: f64,
    /// That variability is a fluctuation's, not one reading's: each reading's deviation counts
    /// up to this many standard deviations (at least `erratic_std`), so a single glitched
    /// record (a gauge spike, a frame of garbage) cannot make a steady pump look erratic for
    /// the next half hour, while a fluctuation that keeps up still reaches its full size
    /// within minutes.
    pub variability_clip_sigmas: f64,
    /// PIP below this share of its baseline: drawn down.
    pub pump_off_pip_ratio: f64,
    /// Flow (normalised, relative to baseline) below this share while the intake falls under
    /// its baseline: inflow failing, an early pump-off sign.
    pub pump_off_flow_ratio: f64,
    /// Head ratio (measured TDH / catalog head, relative to baseline) below this: degraded.
    pub head_ratio_low: f64,
    /// A head loss that develops faster than this is abrupt (a leak), seconds.
    pub abrupt_secs: f64,
    /// Wear and scale take at least this long to cost the bar's head, seconds: a loss between
    /// `abrupt_secs` and this with free gas at the intake is the gas's (see `rules::head_loss`).
    pub gradual_min_secs: f64,
    /// A stop at least this long may have been a workover: a head loss latched before it is
    /// judged afresh after the restart.
    pub workover_stop_secs: f64,
    /// A loss classified as a leak has settled `leak_settle_secs` later (the drive and the
    /// annulus have found the new operating point); its head level is the mean over the
    /// `leak_level_secs` after. A head that then stays this much (head-ratio points) below that level for
    /// `leak_deepening_hold_secs` keeps deepening the way wear and scale do, not holding like
    /// a hole's step (see `rules::leak_turned_gradual`).
    pub leak_settle_secs: f64,
    pub leak_level_secs: f64,
    pub leak_deepening_ratio: f64,
    pub leak_deepening_hold_secs: f64,
    /// Slow losses judged as the well's own trend at a steady operating point (see
    /// `rules::HeadTrend`): bucket length, how many completed buckets are kept, the frequency
    /// band one operating point spans, the least steady decline of the head from where the
    /// trend began, over at least `trend_min_secs`, and the least fall of the delivery (the
    /// wellhead pressure or the flow) that must come with it.
    pub trend_bucket_secs: f64,
    pub trend_buckets_kept: usize,
    pub trend_frequency_band: f64,
    pub trend_min_drop: f64,
    pub trend_min_secs: f64,
    pub trend_min_delivery_fall: f64,
    /// The largest share of the decline one bucket may carry (more: a step, not a trend).
    pub trend_max_step_share: f64,
    /// How many standard errors the fitted slope must stand below zero.
    pub trend_min_t: f64,
    /// Current ratio above baseline that counts as overload...
    pub overload_current_ratio: f64,
    /// A winding near its limit that its load explains (no hotter than the baseline's rise
    /// for that load) with the current this far above what the flow takes is overloaded.
    pub overload_current_ratio_near_limit: f64,
    /// ...when the current is also above this share of nameplate (if the nameplate is known).
    pub overload_nameplate_share: f64,
    /// Share of motor losses that do not grow with the load current (iron, friction), and the
    /// exponent of flow in the cooling of the motor: the rise a load and a flow explain.
    pub motor_fixed_loss_share: f64,
    pub cooling_flow_exponent: f64,
    /// Scale is told from wear by a winding that runs hotter than before, for good: by the
    /// level the smoothed rise has held over this long (seconds; the median of its minutes),
    /// not by its value at one reading. A glitched ammeter reading (the rise against a third of the load looks three
    /// times the baseline's) or a drive's speed step lifts the smoothed rise for minutes;
    /// deposits lift it for days.
    pub scale_rise_held_secs: f64,
    /// Winding rise over intake (load-normalised) above this ratio of baseline: cooling lost.
    pub overheat_rise_ratio: f64,
    /// Winding temperature within this margin of the motor's limit counts as overheating, °C.
    pub overheat_margin_c: f64,
    /// A rise beyond what the load explains is an overheat only when the excess has used up
    /// this share of the thermal headroom the well's own running point leaves below the
    /// motor's limit: a motor 15 °C warmer than usual, 60 °C under its limit, is not failing.
    pub overheat_headroom_share: f64,
    /// Without a known winding limit: the smallest excess over the explained rise, °C.
    pub overheat_min_excess_c: f64,
    /// At the baseline's own operating point (within `overheat_steady_tolerance`), a winding
    /// rise this many times what load and cooling explain, and at least this many degrees
    /// above it, is a cooling loss: nothing in the operating point explains it.
    pub overheat_steady_rise_ratio: f64,
    pub overheat_steady_min_excess_c: f64,
    pub overheat_steady_tolerance: f64,
    /// Away from the baseline's operating point: a winding rise this many times its own level
    /// of the last hours (`overheat_level_tau_secs`), at least `overheat_steady_min_excess_c`
    /// degrees, while speed, load, intake and flow held their level of those hours.
    pub overheat_own_level_ratio: f64,
    /// A motor this long after its start has warmed up: its own thermal level learns from then.
    pub overheat_warmup_secs: f64,
    /// Training readings further than this many MADs from the training median are spikes,
    /// and a baseline level that spikes moved by more than `baseline_spike_shift` (relative)
    /// is taken without them.
    pub baseline_spike_mads: f64,
    pub baseline_spike_shift: f64,
    pub baseline_spike_share: f64,
    /// A gap in a well's data this long may hide a stop (or a workover): the motor's own
    /// thermal level is learned afresh after it.
    pub overheat_level_gap_secs: f64,
    /// ...and only while the winding runs at least this many degrees above its own level of
    /// the last hours (an EWMA of the rise ratio over `overheat_level_tau_secs`).
    pub overheat_warming_c: f64,
    pub overheat_level_tau_secs: f64,
    /// Deviation of V/Hz from baseline that counts as a supply excursion.
    pub voltage_deviation: f64,
    /// ...judged only on a reading whose speed moved less than this share since the previous
    /// one: a drive accelerating, decelerating or coasting after a trip is off its steady V/Hz
    /// line (boost, slip, the output's lag), which says nothing about the supply.
    pub voltage_steady_speed_step: f64,
    /// Window and count of supply excursions that make a power fluctuation.
    pub voltage_window_secs: f64,
    pub voltage_min_excursions: u32,
    /// A window also holds at least this many readings: a gauge read every 5 minutes sees a
    /// sag only when a reading falls inside it, so its window must be longer for the same
    /// count to be reachable (the expected count from the baseline rate grows with it, so the
    /// Poisson bar stays as strict).
    pub voltage_window_min_readings: f64,
    /// How far (in Poisson standard deviations) the excursion count must exceed what the
    /// well's healthy baseline rate predicts for the window.
    pub voltage_excess_sigmas: f64,
    /// Longest interval between readings taken as the sampling rate (longer: a gap).
    pub max_sample_interval_secs: f64,
    /// A channel repeating the same value with less than this probability is stuck.
    pub stuck_probability: f64,
    pub stuck_min_readings: u32,
    /// A run must also last this many times the longest repeat seen in training (readings and
    /// time): a coarse or slowly updated gauge repeats legitimately.
    pub stuck_training_run_factor: f64,
    /// A gauge whose successive training differences spread less than this many resolution
    /// steps is coarse: its noise is below its resolution, so it mostly repeats and now and
    /// then dithers one step (a slow signal near a step); its repeats say nothing, so it is
    /// never judged stuck. A gauge whose noise is about one step already spreads its
    /// differences over 1.4 steps (√2 × its noise): it repeats only by chance, and a long run
    /// of one value is as telling as on a finer gauge.
    pub coarse_gauge_steps: f64,
    /// A training step more than this many times the usual step (or the resolution) is a spike
    /// or a change of the process: left out of the spread that measures the gauge's noise.
    pub noise_step_outlier_factor: f64,
    /// A gauge that repeated its value more often than it changed in training (its resolution
    /// is coarser than a steady process moves: a 1 °C winding gauge) is stuck only if the
    /// process moved meanwhile: the level of the drive frequency, current, a pressure or the flow
    /// moved by this share since the value began. A steady pump reading one value is physics.
    pub stuck_excitation_share: f64,
    /// A value this many times its recent level (or exactly zero) that returns at once is a spike.
    pub spike_factor: f64,
    pub spike_count: u32,
    pub spike_window_secs: f64,
    /// A motor winding or the fluid at the intake cannot change temperature faster than this
    /// (°C per minute: thermal mass; a start or a trip moves them by a few degrees a minute):
    /// 2 × `spike_count` faster moves (a spike is two: out and back) within
    /// `spike_window_secs` make the gauge erratic.
    pub temperature_slew_c_per_min: f64,
    /// ...counting only jumps of at least this many °C (noise and resolution stay below).
    pub temperature_min_jump_c: f64,
    /// The fastest the intake pressure can move, psi per minute: it is the casing pressure plus
    /// the fluid column in the annulus, which fills or drains at most at the pump's rate over
    /// the annulus capacity (5 000 bbl/d into 0.02 bbl/ft is ~170 ft/min, ~75 psi/min). A gauge
    /// jumping back and forth faster than that (`spike_count` times out and back within
    /// `spike_window_secs`) is erratic, as for the temperatures...
    pub intake_pressure_slew_psi_per_min: f64,
    /// ...counting only jumps of at least this many psi (noise and resolution stay below).
    pub intake_pressure_min_jump_psi: f64,
    /// A pressure, temperature or flow gauge whose median step between readings is this many
    /// times its usual one, while every other channel scatters less than
    /// `noise_alone_ratio` times its own usual, is noisy (`noise_ratio_off` keeps it so)...
    pub noise_ratio: f64,
    pub noise_ratio_off: f64,
    pub noise_alone_ratio: f64,
    /// ...for `noise_confirm_readings` readings in a row, with a median step of at least this
    /// share of the typical value (gauges are accurate to about 0.1 %).
    pub noise_min_share: f64,
    /// A scattering ammeter reads around the true current: the median of its recent readings
    /// stays within this share of its usual level. A load that snatches and rises (sand, drag)
    /// is the process, not the gauge.
    pub noise_level_share: f64,
    /// ...and jumps between successive readings by at least this share of its typical value
    /// (median step). Gas cycling the load by a tenth or so with the discharge and the flow
    /// damped is the process.
    pub noise_current_min_share: f64,
    pub noise_confirm_readings: u32,
    /// Time constant of the usual step, seconds (learned only while the gauge is not noisy).
    pub noise_usual_tau_secs: f64,
    /// Share of recent readings (over `dropout_window_secs`) missing a channel that otherwise
    /// reports: dropout. (A short communication gap is not a failing sensor.)
    pub dropout_share: f64,
    pub dropout_window_secs: f64,
    /// Without a frequency channel the speed ratio is read from the voltage ratio, within
    /// this range.
    pub speed_from_voltage_range: (f64, f64),
    /// Time constants of the fast and slow smoothed features, seconds.
    pub fast_tau_secs: f64,
    pub slow_tau_secs: f64,
    /// After a start the drive ramps; the steady-state rules wait this long, seconds.
    pub ramp_secs: f64,
    /// A frequency step larger than this share of the running frequency is a transient...
    pub transient_frequency_step: f64,
    /// ...during which only the protective rules judge, seconds.
    pub transient_grace_secs: f64,
    /// A channel departing this share from its level counts as moving (several moving
    /// together: the pump changed, not a sensor).
    pub system_change_departure: f64,
    /// Without a flow meter, head below this ratio means no flow.
    pub no_flow_head_ratio: f64,
    /// Tubing pressure above baseline by this ratio with no flow: deadhead.
    pub deadhead_tubing_ratio: f64,
    /// A pump starting against a shut outlet presses the wellhead towards its shut-in head:
    /// this many times the baseline while still coming up to speed (a packed flowline or a
    /// restart after a long stop stays well below it).
    pub deadhead_start_tubing_ratio: f64,
    /// A stop confirms the loss-of-lift or overload evidence found at speed with at most this
    /// many readings of the drive decelerating in between (polling intervals vary too much
    /// for a time limit: a SCADA poll of 15 minutes is one reading).
    pub trip_confirm_readings: u32,
    /// A stop also confirms such evidence seen at most this long before it, however many
    /// readings came between (a 10 s poll sees the relay's last half minute as several
    /// readings, where the current may dip below the bar before it trips).
    pub trip_confirm_secs: f64,
    /// Head below this ratio: lift lost.
    pub lift_lost_head_ratio: f64,
    /// Wellhead pressure below this share of its baseline with the motor unloaded and the
    /// intake not drawn down: the pump no longer delivers, although a check valve keeps the
    /// tubing column (and with it the gauges' pressure rise) standing.
    pub no_delivery_tubing_ratio: f64,
    /// Without a wellhead gauge, the discharge gauge below this share of its baseline says the
    /// same: a check valve holds the column, but the flowing wellhead pressure and the tubing
    /// friction above the static column are gone.
    pub no_delivery_discharge_ratio: f64,
    /// Gas lock: head and current below these ratios with vibration at or above its ratio.
    pub gas_lock_head_ratio: f64,
    pub gas_lock_current_ratio: f64,
    /// A "lock" that has kept delivering at least this flow ratio (slow level) for this long is
    /// gas interference (see `rules::gas_lock_still_delivering`).
    pub gas_lock_delivering_flow_ratio: f64,
    pub gas_lock_delivering_secs: f64,
    pub gas_lock_vibration_ratio: f64,
    /// The highest confidence of gas interference in a run that followed a gas lock: the lock
    /// cycling and interference look alike until the pump locks again.
    pub gas_after_lock_confidence: f64,
    /// A broken shaft leaves the current steady: fast std of the current ratio below this.
    pub broken_shaft_steady_std: f64,
    /// A broken shaft unloads the motor at once: from loaded (`gas_lock_current_ratio`) to
    /// unloaded (`unloaded_current_ratio`) within this many seconds. Slower is gas, where the
    /// readings are close enough to tell, seconds.
    pub shaft_unload_max_secs: f64,
    /// How many readings the current must have been watched (since the pump started) before
    /// it counts as steady.
    pub broken_shaft_steady_readings: u32,
    /// Pump-off without a flow meter: the motor unloads below this current ratio.
    pub pump_off_current_ratio: f64,
    /// Early pump-off: the fast intake ratio below the slow one by this margin...
    pub pip_fall_margin: f64,
    /// ...with the slow one below baseline (flow meter) or already below this ratio (none).
    pub pip_drawn_ratio: f64,
    /// Surface GOR climbing (fast ratio at or above this): gas breaking out.
    pub gas_gor_rising_ratio: f64,
    /// The fast GOR ratio must exceed `gas_gor_ratio` by this margin to count alone.
    pub gas_gor_fast_margin: f64,
    /// Intake below this multiple of the bubble point: free gas at the intake.
    pub gas_near_bubble_ratio: f64,
    /// On a well whose baseline already ran below the bubble point, gas interference needs a
    /// fluctuation this many times the erratic limit.
    pub gas_violent_factor: f64,
    /// Gas makes the current (and discharge) cycle: a fluctuation counts only with at least this
    /// many swings across the erratic band around the level within `gas_swing_window_secs`. A
    /// step (speed change, restart) crosses once.
    pub gas_min_swings: u32,
    /// A tubing leak cannot raise the wellhead pressure: above 1 + this (smoothed, against the
    /// baseline), a sudden head loss is not taken for a leak.
    pub leak_wellhead_tolerance: f64,
    /// A valve nearly closed: the wellhead pressure past `deadhead_tubing_ratio` with the
    /// delivery below this ratio (or, without a flow meter, the current below the next one).
    pub throttled_flow_ratio: f64,
    pub throttled_current_ratio: f64,
    /// A flow meter reading below this share of the baseline flow while the pump's current
    /// and pressure rise both stay within `meter_bypass_tolerance` of their baseline is not
    /// measuring this pump (production routed past it, as in a well test, or a failed
    /// meter): its readings are left out of the diagnosis.
    pub meter_bypass_flow_ratio: f64,
    pub meter_bypass_tolerance: f64,
    /// Bubble point ∝ (solution GOR)^this (Standing's correlation).
    pub bubble_point_gor_exponent: f64,
    /// Intake (smoothed) above this multiple of the bubble point: no free gas at the pump.
    pub gas_free_pip_ratio: f64,
    pub gas_swing_window_secs: f64,
    /// Gas-rich fluid with flow below this ratio: gas displacing liquid.
    pub gas_flow_ratio: f64,
    /// Overload well below nameplate needs this larger unexplained current ratio.
    pub overload_current_ratio_under_nameplate: f64,
    /// A head lost with a current far beyond what running out on the curve takes is drag
    /// (overload) for this long after the head was last at its baseline; later, the head
    /// rules judge it (wear adds friction as it costs head, over days).
    pub drag_head_window_secs: f64,
    /// Before a baseline (or right after a start): overload is current at or above this share
    /// of nameplate.
    pub nameplate_overload_share: f64,
    /// A motor loaded by its own pump lifting more from a fuller intake is at an operating
    /// point, not dragged (sand, emulsion, heavy fluid): the intake this far above its baseline
    /// (the annulus full after a stop or a workover) while the pump delivers at least
    /// `overload_lift_delivery_ratio` of its baseline (flow, or the wellhead pressure the
    /// flow holds up) is not an overload, while the current ratio stays within
    /// `overload_lift_current_per_delivery` times that delivery ratio (a pump's brake
    /// horsepower grows no faster than its flow right of its best efficiency: a current far
    /// ahead of the delivery is drag on top of the lift).
    pub overload_lift_pip_ratio: f64,
    pub overload_lift_delivery_ratio: f64,
    pub overload_lift_current_per_delivery: f64,
    /// A current rise the pump turns into output is work, not drag: at least this share of
    /// the rise comes back as hydraulic power (flow × pressure rise per volt-amp held, the
    /// efficiency ratio times the current ratio). A drive sped up without a frequency channel
    /// to show it (flow, lift and current up together) passes; sand, an emulsion or a tight
    /// bearing costs current with no more output and lowers the efficiency as it goes.
    pub overload_work_explained_share: f64,
    /// A head loss starts counting (for its development time) at this share of the way to
    /// `head_ratio_low`.
    pub head_departure_share: f64,
    /// Head ratio below `head_ratio_low` by this much gives full confidence.
    pub head_loss_full_depth: f64,
    /// Without a discharge gauge, a sudden delivery loss (flow below `head_ratio_low` × its
    /// level over the settling time) counts as head loss when the intake rose by this factor
    /// over its level and the wellhead pressure fell below `proxy_max_tubing_ratio` × its level.
    pub proxy_pip_rise_ratio: f64,
    pub proxy_max_tubing_ratio: f64,
    /// ...at a frequency within this share of its level over the settling time.
    pub proxy_frequency_band: f64,
    /// A frequency reading dropped from a well that reports it is held from the last reading
    /// that had both frequency and voltage, at most this long ago, while the drive's output
    /// voltage stays within this share of that reading's.
    pub frequency_hold_secs: f64,
    pub frequency_hold_voltage_band: f64,
    /// A sudden head loss to below this ratio, with the intake rising by `leak_step_pip_rise`
    /// over its level and the wellhead not pressing back, is a leak even above
    /// `head_ratio_low`.
    pub leak_step_head_ratio: f64,
    /// A sudden step of the head by this share below its level just before, with the intake
    /// up by `leak_step_pip_rise` and the delivery down to `leak_step_flow_fall` of theirs,
    /// held for `leak_step_confirm_secs`, is a (subtle) leak; the wellhead may not rise by
    /// more than `leak_subtle_thp_tolerance` meanwhile.
    pub leak_subtle_head_drop: f64,
    pub leak_step_confirm_secs: f64,
    pub leak_subtle_thp_tolerance: f64,
    /// The intake must have risen this much above its level before the step (the annulus
    /// filling with what the leak returns) within `abrupt_secs`.
    pub leak_subtle_pip_rise: f64,
    /// ...or, on a drive holding its intake, the speed up by this share over its level with the
    /// intake at or above this share of its level.
    pub leak_subtle_speed_rise: f64,
    pub leak_subtle_pip_held: f64,
    /// A head loss is a pump losing head only while the surface delivery is below this share
    /// of its baseline (at or above it, the operating point moved right on the curve).
    pub head_loss_min_flow_shortfall_ratio: f64,
    /// A head loss that developed over hours while the drive turned this much faster (since
    /// the head began to depart) is the operating point moving, not wear or scale.
    pub moved_right_speed_rise: f64,
    /// Without a flow meter: an intake this far above its baseline and falling is the annulus
    /// drawing down after a start.
    pub drawdown_pip_ratio: f64,
    pub leak_step_pip_rise: f64,
    /// ...and the surface flow at or below this share of its level.
    pub leak_step_flow_fall: f64,
    /// A leak keeps the motor loaded: current ratio at or above this.
    pub leak_current_ratio: f64,
    /// Free gas reaching the pump lightens what it lifts: at a steady speed and supply the
    /// motor unloads. A fall of the current ratio by `unload_open_drop` below its level over
    /// the settling time opens a watch (that level is then held as the reference). A fall by
    /// `unload_confirm_drop` below the reference and below the well's baseline (median of the
    /// last `unload_confirm_secs`), with the intake not drawn down (by more than
    /// `pip_fall_margin`) and the wellhead and discharge not up (by more than
    /// `unload_max_pressure_rise`), confirms it within `unload_watch_secs`. It lasts while the
    /// current stays `unload_release_drop` below both.
    pub unload_open_drop: f64,
    pub unload_confirm_drop: f64,
    pub unload_release_drop: f64,
    pub unload_confirm_secs: f64,
    pub unload_watch_secs: f64,
    pub unload_max_pressure_rise: f64,
    /// How long after a sudden, loaded head loss the intake is watched before it is judged a
    /// leak: a leak fills the annulus, a pump pushed right on its curve draws it down.
    pub leak_intake_watch_secs: f64,
    /// Scale insulates the motor: since the head began to depart, the winding-rise ratio the
    /// lost flow does not explain has grown by at least this (a worn pump's stays level).
    pub scale_unexplained_rise: f64,
    /// ...or the winding-rise ratio itself has grown by at least this: more than the cooling
    /// a worn pump's lost flow takes (a tenth or two of the flow: a rise up by ~15 % at most).
    pub scale_rise_change: f64,
    /// Overheating needs the pump producing: flow and intake ratios at or above these.
    pub overheat_producing_flow_ratio: f64,
    pub overheat_producing_pip_ratio: f64,
    /// Fast motor temperature below the slow one by this much: cooling down, °C.
    pub cooling_down_c: f64,
    /// Time constant of the smoothed anomaly score, seconds.
    pub anomaly_smooth_secs: f64,
    /// The model follows slow normal drift with this time constant, from readings scoring
    /// below `anomaly_adapt_below` (pointwise-limit units) while nothing is found or open.
    pub anomaly_adapt_secs: f64,
    pub anomaly_adapt_below: f64,
    /// An anomaly alarm needs the smoothed alarm score (in units of the alarm limits) above this.
    pub anomaly_alarm_score: f64,
    /// Anomaly model: share of variance kept by the principal components.
    pub anomaly_variance_kept: f64,
    /// Pointwise limits = this quantile of the well's own training scores (a reading above them
    /// is flagged anomalous); alarm limits = that × `anomaly_limit_margin` (with floors).
    pub anomaly_quantile: f64,
    pub anomaly_limit_margin: f64,
    /// Minimum standard deviation of a normalised feature (keeps a very quiet baseline from
    /// turning noise into anomalies).
    pub anomaly_std_floor: f64,
    /// Running time after a start before the anomaly model judges (the fluid level needs hours
    /// to draw down after a stop), seconds.
    pub anomaly_settle_secs: f64,
    /// The smoothed score must stay above `anomaly_alarm_score` this long to raise an alarm,
    /// seconds; the alarm clears below `anomaly_clear` × `anomaly_alarm_score`.
    pub anomaly_persist_secs: f64,
    pub anomaly_clear: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            train_secs: 8.0 * 3600.0,
            settle_secs: 1800.0,
            rest_pip_band: 0.005,
            rest_hold_secs: 1800.0,
            settle_max_secs: 6.0 * 3600.0,
            raise_secs: 60.0,
            raise_secs_major: 300.0,
            raise_secs_minor: 1800.0,
            min_confidence_critical: 0.6,
            min_confidence_major: 0.6,
            min_confidence_minor: 0.5,
            raise_readings: 2,
            thermal_persist_secs: 900.0,
            gas_interference_persist_secs: 1800.0,
            clear_secs: 1200.0,
            clear_secs_gradual: 7200.0,
            hold_off_secs: 4.0 * 3600.0,
            switch_secs: 900.0,
            min_running_frequency_ratio: 0.8,
            min_held_frequency_ratio: 0.6,
            held_speed_band: 0.02,
            no_load_share: 0.3,
            no_flow_ratio: 0.15,
            unloaded_current_ratio: 0.7,
            deadhead_discharge_ratio: 1.04,
            broken_shaft_vibration_ratio: 0.7,
            gas_gor_ratio: 1.25,
            erratic_std: 0.015,
            erratic_factor: 3.0,
            variability_clip_sigmas: 3.0,
            pump_off_pip_ratio: 0.75,
            pump_off_flow_ratio: 0.95,
            head_ratio_low: 0.92,
            abrupt_secs: 3600.0,
            gradual_min_secs: 6.0 * 3600.0,
            workover_stop_secs: 6.0 * 3600.0,
            leak_settle_secs: 3.0 * 3600.0,
            leak_level_secs: 3600.0,
            leak_deepening_ratio: 0.05,
            leak_deepening_hold_secs: 3600.0,
            trend_bucket_secs: 6.0 * 3600.0,
            trend_buckets_kept: 16,
            trend_frequency_band: 0.01,
            trend_min_drop: 0.03,
            trend_min_secs: 24.0 * 3600.0,
            trend_min_delivery_fall: 0.01,
            trend_max_step_share: 0.5,
            trend_min_t: 4.0,
            overload_current_ratio: 1.12,
            overload_current_ratio_near_limit: 1.06,
            overload_nameplate_share: 1.0,
            motor_fixed_loss_share: 0.4,
            cooling_flow_exponent: 0.8,
            scale_rise_held_secs: 3600.0,
            overheat_rise_ratio: 1.5,
            overheat_margin_c: 10.0,
            overheat_headroom_share: 0.5,
            overheat_min_excess_c: 20.0,
            overheat_steady_rise_ratio: 1.3,
            overheat_steady_min_excess_c: 8.0,
            overheat_steady_tolerance: 0.05,
            overheat_own_level_ratio: 1.15,
            overheat_warmup_secs: 2.0 * 3600.0,
            baseline_spike_mads: 6.0,
            baseline_spike_shift: 0.005,
            baseline_spike_share: 0.03,
            overheat_level_gap_secs: 1800.0,
            overheat_warming_c: 4.0,
            overheat_level_tau_secs: 6.0 * 3600.0,
            voltage_deviation: 0.04,
            voltage_steady_speed_step: 0.05,
            voltage_window_secs: 1800.0,
            voltage_min_excursions: 2,
            voltage_window_min_readings: 24.0,
            voltage_excess_sigmas: 3.0,
            max_sample_interval_secs: 600.0,
            stuck_probability: 1e-9,
            stuck_min_readings: 10,
            stuck_training_run_factor: 3.0,
            stuck_excitation_share: 0.03,
            coarse_gauge_steps: 0.75,
            noise_step_outlier_factor: 8.0,
            spike_factor: 2.5,
            spike_count: 3,
            spike_window_secs: 3600.0,
            temperature_slew_c_per_min: 10.0,
            temperature_min_jump_c: 5.0,
            intake_pressure_slew_psi_per_min: 100.0,
            intake_pressure_min_jump_psi: 50.0,
            noise_ratio: 6.0,
            noise_ratio_off: 3.0,
            noise_alone_ratio: 2.5,
            noise_min_share: 0.004,
            noise_level_share: 0.15,
            noise_current_min_share: 0.2,
            noise_confirm_readings: 5,
            noise_usual_tau_secs: 6.0 * 3600.0,
            dropout_share: 0.5,
            dropout_window_secs: 1800.0,
            speed_from_voltage_range: (0.6, 1.3),
            fast_tau_secs: 60.0,
            slow_tau_secs: 600.0,
            ramp_secs: 150.0,
            transient_frequency_step: 0.04,
            transient_grace_secs: 900.0,
            system_change_departure: 0.1,
            no_flow_head_ratio: 0.3,
            deadhead_tubing_ratio: 1.5,
            deadhead_start_tubing_ratio: 3.0,
            lift_lost_head_ratio: 0.5,
            no_delivery_tubing_ratio: 0.8,
            no_delivery_discharge_ratio: 0.97,
            trip_confirm_readings: 2,
            trip_confirm_secs: 60.0,
            gas_lock_head_ratio: 0.75,
            gas_lock_current_ratio: 0.85,
            gas_lock_delivering_flow_ratio: 0.5,
            gas_lock_delivering_secs: 7200.0,
            gas_lock_vibration_ratio: 1.1,
            gas_after_lock_confidence: 0.75,
            broken_shaft_steady_std: 0.03,
            broken_shaft_steady_readings: 3,
            shaft_unload_max_secs: 120.0,
            pump_off_current_ratio: 0.95,
            pip_fall_margin: 0.01,
            pip_drawn_ratio: 0.9,
            gas_gor_rising_ratio: 1.1,
            gas_gor_fast_margin: 0.05,
            gas_near_bubble_ratio: 1.05,
            gas_flow_ratio: 0.9,
            gas_violent_factor: 2.0,
            gas_min_swings: 2,
            leak_wellhead_tolerance: 0.1,
            throttled_flow_ratio: 0.5,
            throttled_current_ratio: 0.8,
            meter_bypass_flow_ratio: 0.1,
            meter_bypass_tolerance: 0.1,
            bubble_point_gor_exponent: 0.83,
            gas_free_pip_ratio: 1.25,
            gas_swing_window_secs: 1800.0,
            overload_current_ratio_under_nameplate: 1.2,
            drag_head_window_secs: 21600.0,
            nameplate_overload_share: 1.1,
            overload_lift_pip_ratio: 1.3,
            overload_lift_delivery_ratio: 1.0,
            overload_lift_current_per_delivery: 1.25,
            overload_work_explained_share: 0.5,
            head_departure_share: 1.0 / 3.0,
            head_loss_full_depth: 0.1,
            proxy_pip_rise_ratio: 1.02,
            proxy_max_tubing_ratio: 0.98,
            proxy_frequency_band: 0.01,
            frequency_hold_secs: 900.0,
            frequency_hold_voltage_band: 0.02,
            leak_step_head_ratio: 0.955,
            leak_subtle_head_drop: 0.02,
            leak_step_confirm_secs: 600.0,
            leak_subtle_thp_tolerance: 0.01,
            leak_subtle_pip_rise: 1.01,
            leak_subtle_speed_rise: 1.01,
            leak_subtle_pip_held: 0.99,
            head_loss_min_flow_shortfall_ratio: 1.0,
            moved_right_speed_rise: 0.03,
            drawdown_pip_ratio: 1.05,
            leak_step_pip_rise: 1.02,
            leak_step_flow_fall: 0.97,
            leak_current_ratio: 0.95,
            unload_open_drop: 0.025,
            unload_confirm_drop: 0.05,
            unload_release_drop: 0.025,
            unload_confirm_secs: 600.0,
            unload_watch_secs: 7200.0,
            unload_max_pressure_rise: 0.01,
            leak_intake_watch_secs: 600.0,
            scale_unexplained_rise: 0.07,
            scale_rise_change: 0.2,
            overheat_producing_flow_ratio: 0.8,
            overheat_producing_pip_ratio: 0.85,
            cooling_down_c: 0.5,
            anomaly_smooth_secs: 300.0,
            anomaly_alarm_score: 1.0,
            anomaly_adapt_secs: 86_400.0,
            anomaly_adapt_below: 3.0,
            anomaly_variance_kept: 0.9,
            anomaly_quantile: 0.995,
            anomaly_limit_margin: 2.0,
            anomaly_std_floor: 0.05,
            anomaly_settle_secs: 7200.0,
            anomaly_persist_secs: 3600.0,
            anomaly_clear: 0.7,
        }
    }
}

/// What an episode of one severity needs to open.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AlarmPolicy {
    pub min_confidence: f64,
    pub persist_secs: f64,
}

impl Thresholds {
    /// Head ratio below which a head loss has started (it counts towards its development
    /// time): `head_departure_share` of the way down to `head_ratio_low`.
    pub fn head_departure_ratio(&self) -> f64 {
        1.0 - (1.0 - self.head_ratio_low) * self.head_departure_share
    }

    /// The alarm policy of a severity.
    pub fn alarm_policy(&self, severity: Severity) -> AlarmPolicy {
        let (min_confidence, persist_secs) = match severity {
            Severity::Critical => (self.min_confidence_critical, self.raise_secs),
            Severity::Major => (self.min_confidence_major, self.raise_secs_major),
            Severity::Minor => (self.min_confidence_minor, self.raise_secs_minor),
        };
        AlarmPolicy {
            min_confidence,
            persist_secs,
        }
    }

    /// The alarm policy of a diagnosis: its severity's, except the thermal conditions' longer
    /// persistence (`thermal_persist_secs`).
    pub fn alarm_policy_for(&self, d: Diagnosis) -> AlarmPolicy {
        let mut policy = self.alarm_policy(d.severity());
        if d.is_thermal() {
            policy.persist_secs = policy.persist_secs.max(self.thermal_persist_secs);
        }
        if d == Diagnosis::Condition(Condition::GasInterference) {
            policy.persist_secs = policy.persist_secs.max(self.gas_interference_persist_secs);
        }
        policy
    }
}

/// Global thresholds plus per-well overrides.
///
/// JSON: `{"global": {...}, "wells": {"WELL-001": {"pump_off_pip_ratio": 0.6}}}`; every key
/// optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThresholdSet {
    pub global: Thresholds,
    pub wells: BTreeMap<String, serde_json::Value>,
}

impl ThresholdSet {
    /// Checks that every per-well override merges into valid thresholds.
    pub fn validate(&self) -> Result<(), String> {
        for id in self.wells.keys() {
            self.for_well(id)?;
        }
        Ok(())
    }

    /// The thresholds for one well: the global set with its overrides applied.
    pub fn for_well(&self, well_id: &str) -> Result<Thresholds, String> {
        let Some(patch) = self.wells.get(well_id) else {
            return Ok(self.global.clone());
        };
        let mut base = serde_json::to_value(&self.global).map_err(|e| e.to_string())?;
        let (Some(obj), Some(patch)) = (base.as_object_mut(), patch.as_object()) else {
            return Err(format!("wells.{well_id}: must be an object of thresholds"));
        };
        for (k, v) in patch {
            obj.insert(k.clone(), v.clone());
        }
        serde_json::from_value(base).map_err(|e| format!("wells.{well_id}: {e}"))
    }
}
