"""trackformers.sim: event generation and a fast simulation of the TrackML detector.

Public API:
    write_events, validate_event, read_metadata   -- native ROOT output (writer.py)
    load_geometry, Geometry                       -- detector as data (geometry.py + YAML)
    DetectorSim, DetectorConfig                   -- particles -> hits event dict (detector.py)
    ParticleGun, GunConfig                        -- particle gun (gun.py)
    build_generator                               -- process name -> event source
    EventFactory                                  -- settings -> event i (pure in seed, i)
    validation_plot, validation_summary           -- realism plot / numbers (validation.py)
    SimulatedEventStream (trackformers.sim.stream) -- on-the-fly torch IterableDataset
    trackml_weights                               -- official TrackML hit weights (weights.py)
    BEAMSPOTS (beamspot.py), TRACKML_NOISE_FRACTION (noise.py) -- TrackML-like defaults
    encode_particle_id, decode_vertex_id,
    decode_generation                             -- particle ids carrying vertex and generation
    transport                                     -- propagation + material secondaries
"""

from trackformers.sim.beamspot import BEAMSPOTS
from trackformers.sim.detector import DetectorConfig, DetectorSim
from trackformers.sim.events import EventFactory
from trackformers.sim.generators import build_generator
from trackformers.sim.geometry import Geometry, load_geometry
from trackformers.sim.gun import GunConfig, ParticleGun
from trackformers.sim.interactions import transport
from trackformers.sim.noise import TRACKML_NOISE_FRACTION
from trackformers.sim.particle_id import decode_generation, decode_vertex_id, encode_particle_id
from trackformers.sim.validation import validation_plot, validation_summary
from trackformers.sim.weights import trackml_weights
from trackformers.sim.writer import read_metadata, validate_event, write_events

__all__ = [
    "BEAMSPOTS",
    "TRACKML_NOISE_FRACTION",
    "DetectorConfig",
    "EventFactory",
    "DetectorSim",
    "Geometry",
    "GunConfig",
    "ParticleGun",
    "build_generator",
    "decode_generation",
    "decode_vertex_id",
    "encode_particle_id",
    "load_geometry",
    "read_metadata",
    "trackml_weights",
    "transport",
    "validate_event",
    "validation_plot",
    "validation_summary",
    "write_events",
]
