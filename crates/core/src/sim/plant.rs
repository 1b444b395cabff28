//! The physical model of one ESP installation: reservoir inflow, annulus fluid level, pump on its
//! catalog curve through the affinity laws, tubing to the surface, motor electrics and heat, and
//! the protection relay. Conditions act on it only through [`Effects`], the way the real faults
//! act on a real well (gas at the intake, a hole in the tubing, a worn stage), so every signal
//! they produce comes out of the same physics as normal operation.

use crate::hydraulics::{
    Affinity, KW_PER_HP, PSI_PER_FT_WATER, StageCurve, pump_bhp, pump_head_ft,
};

use super::catalog::PumpModel;
use super::family::{GasModel, InflowModel, MotorModel, Physics};

/// Cubic feet per barrel.
const FT3_PER_BBL: f64 = 5.615;
const SECONDS_PER_DAY: f64 = 86_400.0;
/// Motor efficiency at load.
const MOTOR_EFFICIENCY: f64 = 0.88;
/// Magnetising (no-load) current as a share of nameplate amps.
const NO_LOAD_SHARE: f64 = 0.30;
/// Frequency ramp of the drive on start and on set-point changes, Hz/s.
const RAMP_HZ_PER_S: f64 = 0.5;
/// Underload protection is bypassed this long after a start (the drive is still ramping and the
/// annulus still drawing down).
const START_BYPASS_S: f64 = 240.0;

/// Fixed description of one installation.
#[derive(Clone, Debug)]
pub struct Plant {
    pub model: &'static PumpModel,
    pub curve: StageCurve,
    /// Best-efficiency flow at base frequency, bbl/d.
    pub bep_flow_bpd: f64,
    pub stages: f64,
    pub base_hz: f64,
    pub nominal_hz: f64,
    pub rated_hp: f64,
    pub rated_voltage_v: f64,
    pub rated_current_a: f64,
    pub max_winding_temp_c: f64,
    /// Pump setting depth, ft.
    pub depth_ft: f64,
    /// Perforations below the intake, ft.
    pub perfs_below_ft: f64,
    pub casing_psi: f64,
    /// Separator pressure the flowline discharges into, psi.
    pub separator_psi: f64,
    /// Flowline back-pressure coefficient: THP = separator + k·q².
    pub flowline_k: f64,
    /// Tubing friction coefficient: ΔP = k·q².
    pub tubing_friction_k: f64,
    pub sg: f64,
    pub water_cut_pct: f64,
    pub gor_scf_bbl: f64,
    pub bubble_point_psi: f64,
    pub reservoir_psi: f64,
    /// Productivity index, bbl/d per psi.
    pub pi: f64,
    pub reservoir_temp_c: f64,
    /// Annulus cross-section where the fluid level moves, ft².
    pub annulus_area_ft2: f64,
    /// Flow area past the motor, ft² (sets cooling velocity).
    pub motor_flow_area_ft2: f64,
    /// Winding rise over intake at nameplate load with 1 ft/s cooling flow, °C.
    pub winding_rise_c: f64,
    pub base_vibration_g: f64,
    pub vibration_axis_ratio: f64,
    /// Underload trip current, A (set at commissioning from the healthy running current).
    pub underload_a: f64,
    /// Overload trip current, A.
    pub overload_a: f64,
    pub restart_delay_s: f64,
    /// The modelling choices of this installation's family ([`Physics::CLASSIC`] by default).
    pub physics: Physics,
}

/// What the active conditions do to the physics at this moment. `Effects::default()` is a healthy
/// well.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Effects {
    /// Multiplies pump head (wear, scale).
    pub head_factor: f64,
    /// Multiplies brake horsepower (scale friction).
    pub bhp_factor: f64,
    /// Multiplies the reservoir productivity (pump-off).
    pub inflow_factor: f64,
    /// Raises the bubble point seen at the intake (gas breakthrough), psi.
    pub bubble_point_rise_psi: f64,
    /// Free gas forced into the intake regardless of pressure (gas lock), volume fraction.
    pub forced_gas: f64,
    /// Multiplies the measured GOR.
    pub gor_factor: f64,
    /// Surface wing valve closed.
    pub valve_closed: bool,
    /// Share of pump flow returning to the annulus through a tubing hole.
    pub leak_fraction: f64,
    /// Head loss that grows with flow: head multiplied by 1 − slope·(Q/Q_bep)² at base
    /// frequency (worn seal rings, narrowed passages); 0 for a uniform loss.
    pub head_flow_slope: f64,
    pub shaft_broken: bool,
    /// Multiplies shaft load (sand, emulsion).
    pub load_factor: f64,
    /// Multiplies motor cooling.
    pub cooling_factor: f64,
    /// Multiplies supply voltage.
    pub supply_factor: f64,
    /// Added vibration, g.
    pub extra_vibration_g: f64,
}

impl Default for Effects {
    fn default() -> Self {
        Effects {
            head_factor: 1.0,
            bhp_factor: 1.0,
            inflow_factor: 1.0,
            bubble_point_rise_psi: 0.0,
            forced_gas: 0.0,
            gor_factor: 1.0,
            valve_closed: false,
            leak_fraction: 0.0,
            head_flow_slope: 0.0,
            shaft_broken: false,
            load_factor: 1.0,
            cooling_factor: 1.0,
            supply_factor: 1.0,
            extra_vibration_g: 0.0,
        }
    }
}

/// Why the relay stopped the motor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TripCause {
    Underload,
    Overload,
    MotorTemperature,
    Undervoltage,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RunState {
    Running {
        since_s: f64,
    },
    Tripped {
        cause: TripCause,
        restart_at_s: f64,
    },
    /// Stopped by the operator; restarts at the given time.
    Stopped {
        restart_at_s: f64,
    },
}

/// The dynamic state that carries from one step to the next.
#[derive(Clone, Debug)]
pub struct PlantState {
    pub time_s: f64,
    pub run: RunState,
    /// Frequency set point, Hz.
    pub setpoint_hz: f64,
    /// Drive output frequency, Hz (ramps toward the set point).
    pub frequency_hz: f64,
    /// Fluid level above the intake, ft.
    pub level_ft: f64,
    pub motor_temp_c: f64,
    pub reservoir_psi: f64,
    pub water_cut_pct: f64,
    /// Seconds the underload/overload/undervoltage condition has lasted.
    underload_s: f64,
    overload_s: f64,
    undervoltage_s: f64,
    /// Slow random fluctuation for gas slugging and erratic loads (AR(1), unit variance).
    pub turbulence: f64,
    pub starts: u32,
    pub trips: u32,
}

/// The true physical values of one instant (before sensors add noise).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TrueState {
    pub running: bool,
    pub frequency_hz: f64,
    pub current_a: f64,
    pub voltage_v: f64,
    pub intake_psi: f64,
    pub discharge_psi: f64,
    pub tubing_psi: f64,
    pub intake_temp_c: f64,
    pub motor_temp_c: f64,
    pub vibration_x_g: f64,
    pub vibration_y_g: f64,
    /// Liquid rate through the pump, bbl/d.
    pub pump_flow_bpd: f64,
    /// Liquid rate at the surface meter, bbl/d.
    pub surface_flow_bpd: f64,
    pub inflow_bpd: f64,
    pub gas_fraction: f64,
    pub gor_scf_bbl: f64,
    pub water_cut_pct: f64,
    /// Pump head actually delivered, ft of the produced liquid.
    pub pump_head_ft: f64,
    pub electrical_input_kw: f64,
    pub hydraulic_kw: f64,
    pub shaft_hp: f64,
}

/// Inputs of the operating-point solution that do not change within it.
struct Hydraulic {
    aff: Affinity,
    head_scale: f64,
    /// [`Effects::head_flow_slope`].
    flow_slope: f64,
    pip: f64,
    column_psi: f64,
    leak: f64,
}

impl Plant {
    /// Pressure gradient of the produced liquid, psi/ft.
    pub fn gradient(&self) -> f64 {
        PSI_PER_FT_WATER * self.sg
    }

    pub fn intake_pressure(&self, level_ft: f64) -> f64 {
        self.casing_psi + level_ft.max(0.0) * self.gradient()
    }

    /// Fluid level at which the well stops flowing in (Pwf = reservoir pressure).
    pub fn static_level_ft(&self, reservoir_psi: f64) -> f64 {
        ((reservoir_psi - self.casing_psi) / self.gradient() - self.perfs_below_ft).max(0.0)
    }

    pub fn inflow(&self, reservoir_psi: f64, pip: f64, factor: f64) -> f64 {
        let pwf = pip + self.perfs_below_ft * self.gradient();
        match self.physics.inflow {
            InflowModel::StraightLine => (self.pi * factor * (reservoir_psi - pwf)).max(0.0),
            InflowModel::Vogel => {
                // Composite IPR: straight line down to the bubble point, Vogel below it.
                let pb = self.bubble_point_psi.min(reservoir_psi).max(1.0);
                let j = self.pi * factor;
                if pwf >= pb {
                    (j * (reservoir_psi - pwf)).max(0.0)
                } else {
                    let x = (pwf / pb).max(0.0);
                    j * (reservoir_psi - pb) + j * pb / 1.8 * (1.0 - 0.2 * x - 0.8 * x * x)
                }
            }
        }
    }

    /// In-situ free-gas volume per volume of liquid at the intake, before any separation:
    /// solution gas from a Standing-like Rs ∝ p^0.83 below the bubble point, gas formation
    /// volume factor at intake pressure and reservoir temperature (z ≈ 0.9).
    pub fn free_gas_ratio(&self, pip: f64, bubble: f64, gor: f64, water_cut_pct: f64) -> f64 {
        if pip >= bubble || bubble <= 0.0 {
            return 0.0;
        }
        let rs = gor * (pip.max(0.0) / bubble).powf(0.83);
        let t_rankine = self.reservoir_temp_c * 1.8 + 32.0 + 460.0;
        let bg_ft3_per_scf = 0.028_27 * 0.9 * t_rankine / (pip.max(0.0) + 14.7);
        (gor - rs) * bg_ft3_per_scf / FT3_PER_BBL * (1.0 - water_cut_pct / 100.0)
    }

    fn column_psi(&self) -> f64 {
        self.depth_ft * self.gradient()
    }

    fn tubing_head(&self, surface_q: f64, diurnal: f64) -> f64 {
        (self.separator_psi + self.flowline_k * surface_q * surface_q) * diurnal
    }

    /// Pump flow where pump head meets the system curve; 0 if the pump cannot open its check
    /// valve.
    fn solve_flow(&self, h: &Hydraulic, diurnal: f64) -> f64 {
        let grad = self.gradient();
        let excess = |q: f64| {
            let surface = q * (1.0 - h.leak);
            let head_psi = pump_head_ft(&self.curve, self.stages, h.aff, q)
                * h.head_scale
                * self.flow_shape(h.aff, q, h.flow_slope)
                * grad;
            let required = self.tubing_head(surface, diurnal)
                + h.column_psi
                + self.tubing_friction_k * surface * surface
                - h.pip;
            head_psi - required
        };
        if excess(0.0) <= 0.0 {
            return 0.0;
        }
        let mut lo = 0.0;
        let mut hi = h.aff.flow_from_base(self.curve.max_flow());
        for _ in 0..40 {
            let mid = 0.5 * (lo + hi);
            if excess(mid) > 0.0 {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        0.5 * (lo + hi)
    }

    /// Share of head left by a flow-dependent loss at pump flow `q` (1 when `slope` is 0).
    fn flow_shape(&self, aff: Affinity, q: f64, slope: f64) -> f64 {
        let x = aff.flow_to_base(q) / self.bep_flow_bpd;
        (1.0 - slope * x * x).max(0.05)
    }

    /// Running current for a shaft load at a drive frequency and supply voltage.
    fn motor_current(&self, shaft_hp: f64, freq: f64, voltage: f64) -> (f64, f64) {
        if let MotorModel::Curves {
            eff_rated,
            pf_rated,
            light_load_drop,
        } = self.physics.motor
        {
            return self.motor_current_curves(
                shaft_hp,
                freq,
                voltage,
                (eff_rated, pf_rated, light_load_drop),
            );
        }
        let v_per_hz = self.rated_voltage_v * freq / self.base_hz;
        let core_loss_kw = 0.025 * self.rated_hp * KW_PER_HP * freq / self.base_hz;
        let input_kw = shaft_hp * KW_PER_HP / MOTOR_EFFICIENCY + core_loss_kw;
        // Active current is input power over voltage; the constant makes nameplate load at
        // nameplate voltage draw nameplate amps together with the magnetising share.
        let rated_input_kw =
            self.rated_hp * KW_PER_HP / MOTOR_EFFICIENCY + 0.025 * self.rated_hp * KW_PER_HP;
        let active_at_rated = self.rated_current_a * (1.0 - NO_LOAD_SHARE * NO_LOAD_SHARE).sqrt();
        let active = active_at_rated
            * (input_kw / (rated_input_kw * freq / self.base_hz))
            * (v_per_hz / voltage.max(1.0));
        let magnetising = self.rated_current_a * NO_LOAD_SHARE * (voltage / v_per_hz.max(1.0));
        (
            (active * active + magnetising * magnetising).sqrt(),
            input_kw,
        )
    }

    /// Motor current with load-dependent efficiency and power factor: efficiency falls at light
    /// load, reactive current is magnetising (with voltage over V/Hz) plus leakage (with load²);
    /// nameplate load at nameplate V/Hz draws nameplate amps.
    fn motor_current_curves(
        &self,
        shaft_hp: f64,
        freq: f64,
        voltage: f64,
        (eff_rated, pf_rated, drop): (f64, f64, f64),
    ) -> (f64, f64) {
        let ratio = (freq / self.base_hz).max(1e-3);
        let v_per_hz = self.rated_voltage_v * ratio;
        let load = shaft_hp / (self.rated_hp * ratio).max(1e-6);
        let eff = eff_rated
            * (1.0 - drop * (1.0 - load).max(0.0).powi(2))
            * (1.0 - 0.05 * (load - 1.0).max(0.0).powi(2));
        let core_loss_kw = 0.02 * self.rated_hp * KW_PER_HP * ratio;
        let input_kw = shaft_hp * KW_PER_HP / eff.max(0.2) + core_loss_kw;
        let rated_input_kw =
            self.rated_hp * KW_PER_HP / eff_rated + 0.02 * self.rated_hp * KW_PER_HP;
        let active_rated = self.rated_current_a * pf_rated;
        let active =
            active_rated * (input_kw / (rated_input_kw * ratio)) * (v_per_hz / voltage.max(1.0));
        let reactive_rated = self.rated_current_a * (1.0 - pf_rated * pf_rated).sqrt();
        let reactive = reactive_rated
            * (0.75 * voltage / v_per_hz.max(1.0) + 0.25 * (active / active_rated).powi(2));
        ((active * active + reactive * reactive).sqrt(), input_kw)
    }

    /// The healthy equilibrium at a frequency: (pump flow, fluid level). Used to commission the
    /// relay and to start a simulation in steady state.
    pub fn equilibrium(&self, freq: f64, reservoir_psi: f64) -> (f64, f64) {
        let flow_at = |level: f64| self.pump_flow_at(freq, level);
        // Pump flow rises with level, inflow falls: bisect on their difference.
        let mut lo = 0.0;
        let mut hi = self.static_level_ft(reservoir_psi);
        for _ in 0..50 {
            let mid = 0.5 * (lo + hi);
            let d = flow_at(mid) - self.inflow(reservoir_psi, self.intake_pressure(mid), 1.0);
            if d > 0.0 {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        let level = 0.5 * (lo + hi);
        (flow_at(level), level)
    }

    /// Healthy pump flow at a frequency with the fluid level at `level_ft` above the intake.
    pub fn pump_flow_at(&self, freq: f64, level_ft: f64) -> f64 {
        let h = Hydraulic {
            aff: Affinity::new(self.base_hz, freq),
            head_scale: self.physics.viscous_head,
            flow_slope: 0.0,
            pip: self.intake_pressure(level_ft),
            column_psi: self.column_psi(),
            leak: 0.0,
        };
        self.solve_flow(&h, 1.0)
    }

    /// Healthy running current at a frequency (what the relay is commissioned against).
    pub fn healthy_current(&self, freq: f64) -> f64 {
        let (q, _) = self.equilibrium(freq, self.reservoir_psi);
        let aff = Affinity::new(self.base_hz, freq);
        let shaft = pump_bhp(&self.curve, self.stages, aff, q) * self.sg * self.physics.viscous_bhp
            + self.mech_loss_hp(freq);
        self.motor_current(shaft, freq, self.rated_voltage_v * freq / self.base_hz)
            .0
    }

    fn mech_loss_hp(&self, freq: f64) -> f64 {
        0.02 * self.rated_hp * freq / self.base_hz
    }

    /// A state in healthy steady state at the nominal frequency.
    pub fn initial_state(&self) -> PlantState {
        let (_, level) = self.equilibrium(self.nominal_hz, self.reservoir_psi);
        let mut st = PlantState {
            time_s: 0.0,
            run: RunState::Running { since_s: -1e9 },
            setpoint_hz: self.nominal_hz,
            frequency_hz: self.nominal_hz,
            level_ft: level,
            motor_temp_c: self.reservoir_temp_c,
            reservoir_psi: self.reservoir_psi,
            water_cut_pct: self.water_cut_pct,
            underload_s: 0.0,
            overload_s: 0.0,
            undervoltage_s: 0.0,
            turbulence: 0.0,
            starts: 0,
            trips: 0,
        };
        // Settle the winding temperature.
        let probe = self.evaluate(&st, &Effects::default(), 1.0);
        st.motor_temp_c = self.steady_winding_temp(&probe, 1.0);
        st
    }

    fn steady_winding_temp(&self, t: &TrueState, cooling_factor: f64) -> f64 {
        if !t.running {
            return t.intake_temp_c;
        }
        let velocity = t.pump_flow_bpd * FT3_PER_BBL / SECONDS_PER_DAY / self.motor_flow_area_ft2;
        // Film cooling saturates with velocity (normalised to 1 at the classic 1 ft/s minimum);
        // free gas carries little heat away.
        let film = |v: f64| 0.3 + 2.0 * (1.0 - (-v / 1.2).exp());
        let cooling =
            film(velocity) / film(1.0) * cooling_factor * (1.0 - 3.5 * t.gas_fraction).max(0.15);
        let load = t.current_a / self.rated_current_a;
        t.intake_temp_c + self.winding_rise_c * load * load / cooling.max(0.05)
    }

    /// Instantaneous physics for the current state (no time advance).
    pub fn evaluate(&self, st: &PlantState, fx: &Effects, diurnal: f64) -> TrueState {
        let grad = self.gradient();
        let pip = self.intake_pressure(st.level_ft);
        let bubble = self.bubble_point_psi + fx.bubble_point_rise_psi;
        // Free gas at the intake grows as PIP falls below the bubble point (natural separation
        // takes part of it up the annulus); forced gas models a slug or a gas-locked pump.
        let gor_now = self.gor_scf_bbl * fx.gor_factor;
        let natural = match self.physics.gas {
            GasModel::Homogeneous => {
                if pip < bubble {
                    0.7 * (bubble - pip) / bubble
                } else {
                    0.0
                }
            }
            GasModel::Dunbar | GasModel::Turpin => {
                let ratio = self.free_gas_ratio(pip, bubble, gor_now, st.water_cut_pct)
                    * (1.0 - self.physics.gas_separation);
                ratio / (1.0 + ratio)
            }
        };
        let running = matches!(st.run, RunState::Running { .. }) && st.frequency_hz > 0.5;
        let freq = if running { st.frequency_hz } else { 0.0 };
        let inflow_now = self.inflow(st.reservoir_psi, pip, fx.inflow_factor);
        let gor = gor_now;
        let intake_temp_rest = self.reservoir_temp_c;

        if !running {
            // Check valve holds the tubing full: the discharge gauge reads the column.
            let thp = self.tubing_head(0.0, diurnal);
            return TrueState {
                running: false,
                intake_psi: pip,
                discharge_psi: thp + self.column_psi(),
                tubing_psi: thp,
                intake_temp_c: intake_temp_rest,
                motor_temp_c: st.motor_temp_c,
                inflow_bpd: inflow_now,
                gor_scf_bbl: gor,
                water_cut_pct: st.water_cut_pct,
                gas_fraction: natural.min(0.9),
                ..TrueState::default()
            };
        }

        let aff = Affinity::new(self.base_hz, freq);
        let mut gas = (natural + fx.forced_gas).clamp(0.0, 0.9);
        // Starvation: with the level at the intake the pump can only take what flows in; the rest
        // of its swept volume is gas from the annulus.
        let h0 = Hydraulic {
            aff,
            head_scale: fx.head_factor,
            flow_slope: fx.head_flow_slope,
            pip,
            column_psi: self.column_psi(),
            leak: fx.leak_fraction,
        };
        // Gas degrades head sharply past ~30 % by volume (gas lock near 40 %); the slugging
        // turbulence makes it erratic while the pump still turns.
        let gas_head = |g: f64, turb: f64| match self.physics.gas {
            GasModel::Homogeneous => {
                let base = (1.0 - (g / 0.42).powi(2)).clamp(0.02, 1.0);
                (base * (1.0 + 1.5 * g * turb * 0.5)).clamp(0.02, 1.0)
            }
            GasModel::Dunbar => {
                // Critical void fraction rises with intake pressure (Dunbar-style envelope).
                let critical = (0.08 + pip / 5000.0).clamp(0.08, 0.35);
                let base = if g <= critical {
                    1.0
                } else {
                    (1.0 - (g - critical) / 0.3).clamp(0.02, 1.0).powf(1.5)
                };
                let surging = (g / critical).min(2.0);
                (base * (1.0 + 0.3 * surging * turb)).clamp(0.02, 1.0)
            }
            GasModel::Turpin => {
                let ratio = g / (1.0 - g).max(0.05);
                let phi = 2000.0 * ratio / (3.0 * (pip.max(0.0) + 14.7));
                let base = if phi <= 1.0 {
                    1.0
                } else {
                    1.0 / (1.0 + 1.2 * (phi - 1.0))
                };
                // Gas lock past ~50 % void whatever the pressure.
                let lock = ((0.55 - g) / 0.15).clamp(0.02, 1.0);
                let erratic = if phi > 0.7 {
                    0.2 * phi.min(3.0) * turb
                } else {
                    0.0
                };
                (base * lock * (1.0 + erratic)).clamp(0.02, 1.0)
            }
        };
        let mut head_scale =
            fx.head_factor * gas_head(gas, st.turbulence) * self.physics.viscous_head;
        if fx.shaft_broken {
            head_scale = 0.0;
        }
        let mut q = if fx.valve_closed || fx.shaft_broken {
            0.0
        } else {
            self.solve_flow(&Hydraulic { head_scale, ..h0 }, diurnal)
        };
        if st.level_ft <= 1.0 && q > inflow_now + q * fx.leak_fraction {
            let liquid = inflow_now + q * fx.leak_fraction;
            let fillage = (liquid / q).clamp(0.0, 1.0);
            gas = gas.max(1.0 - fillage);
            q = liquid;
        }
        let leak = q * fx.leak_fraction;
        let surface = if fx.valve_closed { 0.0 } else { q - leak };
        let pump_head_now = if fx.shaft_broken {
            0.0
        } else {
            pump_head_ft(&self.curve, self.stages, aff, q)
                * head_scale
                * self.flow_shape(aff, q, fx.head_flow_slope)
        };
        let (discharge, thp) = if fx.shaft_broken {
            let thp = self.tubing_head(0.0, diurnal);
            (thp + self.column_psi(), thp)
        } else if fx.valve_closed {
            // Deadhead: the pump builds its shut-in head on top of the intake pressure.
            let d = pip + pump_head_now * grad;
            (d, (d - self.column_psi()).max(0.0))
        } else if q <= 0.0 {
            let thp = self.tubing_head(0.0, diurnal);
            (
                (pip + pump_head_now * grad).max(thp + self.column_psi()),
                thp,
            )
        } else {
            let thp = self.tubing_head(surface, diurnal);
            (pip + pump_head_now * grad, thp)
        };

        // Shaft load: the pump on the mixture's density, plus bearing and seal losses.
        let mixture_sg = self.sg * (1.0 - gas);
        let pump_shaft = if fx.shaft_broken {
            0.0
        } else {
            pump_bhp(&self.curve, self.stages, aff, q)
                * mixture_sg
                * fx.bhp_factor
                * self.physics.viscous_bhp
        };
        let shaft = pump_shaft * fx.load_factor + self.mech_loss_hp(freq);
        let voltage = self.rated_voltage_v * freq / self.base_hz * fx.supply_factor;
        let (current, input_kw) = self.motor_current(shaft, freq, voltage);

        // Motor losses heat the fluid passing the motor on its way to the intake.
        let loss_kw = input_kw - shaft * KW_PER_HP;
        let heat_capacity = (q.max(20.0)) * 0.00184 * 4.0 * self.sg;
        let intake_temp = self.reservoir_temp_c + (loss_kw.max(0.0) / heat_capacity).min(4.0);

        let hydraulic_kw = q * pump_head_now * mixture_sg.max(0.0) / 135_770.0 * KW_PER_HP;
        let q_base = aff.flow_to_base(q);
        let off_bep = (q_base / self.bep_flow_bpd - 1.0).abs();
        let vib = if fx.shaft_broken {
            0.35 * self.base_vibration_g * aff.ratio * aff.ratio
        } else {
            self.base_vibration_g * aff.ratio * aff.ratio * (1.0 + 1.2 * off_bep * off_bep)
                + gas * 0.6 * self.base_vibration_g * (1.0 + st.turbulence.abs())
                + fx.extra_vibration_g
        };

        TrueState {
            running: true,
            frequency_hz: freq,
            current_a: current,
            voltage_v: voltage,
            intake_psi: pip,
            discharge_psi: discharge,
            tubing_psi: thp,
            intake_temp_c: intake_temp,
            motor_temp_c: st.motor_temp_c,
            vibration_x_g: vib,
            vibration_y_g: vib * self.vibration_axis_ratio,
            pump_flow_bpd: q,
            surface_flow_bpd: surface,
            inflow_bpd: inflow_now,
            gas_fraction: gas,
            gor_scf_bbl: gor,
            water_cut_pct: st.water_cut_pct,
            pump_head_ft: pump_head_now,
            electrical_input_kw: input_kw,
            hydraulic_kw,
            shaft_hp: shaft,
        }
    }

    /// Advances the state by `dt` seconds and returns the physics at the end of the step.
    /// `turbulence_kick` is a fresh standard-normal draw for the slugging process.
    pub fn step(
        &self,
        st: &mut PlantState,
        fx: &Effects,
        dt: f64,
        diurnal: f64,
        turbulence_kick: f64,
    ) -> TrueState {
        st.time_s += dt;
        // AR(1) turbulence with a ~1 minute memory.
        let a = (-dt / 60.0).exp();
        st.turbulence = a * st.turbulence + (1.0 - a * a).sqrt() * turbulence_kick;

        // Restarts and drive ramp.
        match st.run {
            RunState::Tripped { restart_at_s, .. } | RunState::Stopped { restart_at_s }
                if st.time_s >= restart_at_s =>
            {
                st.run = RunState::Running { since_s: st.time_s };
                st.frequency_hz = 0.0;
                st.starts += 1;
            }
            _ => {}
        }
        if let RunState::Running { .. } = st.run {
            let max_step = RAMP_HZ_PER_S * dt;
            let diff = st.setpoint_hz - st.frequency_hz;
            st.frequency_hz += diff.clamp(-max_step, max_step);
        } else {
            st.frequency_hz = 0.0;
        }

        let t = self.evaluate(st, fx, diurnal);

        // Annulus: what flows in (plus leak back) minus what the pump takes moves the level.
        let net_bpd = t.inflow_bpd - t.surface_flow_bpd;
        let dlevel = net_bpd * FT3_PER_BBL / SECONDS_PER_DAY / self.annulus_area_ft2 * dt;
        st.level_ft =
            (st.level_ft + dlevel).clamp(0.0, self.static_level_ft(st.reservoir_psi).max(0.0));

        // Winding temperature: first order toward the load/cooling steady state.
        let target = self.steady_winding_temp(&t, fx.cooling_factor);
        let tau = if t.running { 600.0 } else { 2400.0 };
        st.motor_temp_c += (target - st.motor_temp_c) * (1.0 - (-dt / tau).exp());

        // Protection relay.
        if let RunState::Running { since_s } = st.run {
            let settled = st.time_s - since_s > START_BYPASS_S;
            let v_nominal = self.rated_voltage_v * st.frequency_hz / self.base_hz;
            st.underload_s = if settled && t.current_a < self.underload_a {
                st.underload_s + dt
            } else {
                0.0
            };
            st.overload_s = if t.current_a > self.overload_a {
                st.overload_s + dt
            } else {
                0.0
            };
            st.undervoltage_s = if settled && t.voltage_v < 0.8 * v_nominal {
                st.undervoltage_s + dt
            } else {
                0.0
            };
            let trip = if st.motor_temp_c > self.max_winding_temp_c + 15.0 {
                Some((TripCause::MotorTemperature, self.restart_delay_s * 2.0))
            } else if st.undervoltage_s >= 5.0 {
                Some((TripCause::Undervoltage, 300.0))
            } else if st.overload_s >= 60.0 {
                Some((TripCause::Overload, self.restart_delay_s))
            } else if st.underload_s >= 60.0 {
                Some((TripCause::Underload, self.restart_delay_s))
            } else {
                None
            };
            if let Some((cause, delay)) = trip {
                st.run = RunState::Tripped {
                    cause,
                    restart_at_s: st.time_s + delay,
                };
                st.trips += 1;
                st.underload_s = 0.0;
                st.overload_s = 0.0;
                st.undervoltage_s = 0.0;
            }
        }
        TrueState {
            motor_temp_c: st.motor_temp_c,
            ..t
        }
    }

    /// Operator stop until `restart_at_s`.
    pub fn stop(&self, st: &mut PlantState, restart_at_s: f64) {
        if matches!(st.run, RunState::Running { .. }) {
            st.run = RunState::Stopped { restart_at_s };
        }
    }
}
