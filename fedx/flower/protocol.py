"""The phases of a fedx run, as the server asks for them and the institutions answer them.

=================  ============================================================================
phase              the institution...
=================  ============================================================================
hello              names itself, its training and test sizes, and its key fingerprint
levels             lists the levels of undeclared categorical features in its training rows
moments            sends additive feature statistics (encrypted when encryption is on)
setup              fits the shared preprocessing from the summed statistics, builds the initial
                   model, and answers with digests of both
local-baseline     trains a model on its own data alone and scores it on its own test split
train              brings its copy of the global model to the round, trains, sends its delta
evaluate           brings its copy to the round and scores it on its own test split
final              as evaluate, and saves the final model locally
stats-levels       (fedx stats) lists the level names of the query's undeclared categorical columns
stats              (fedx stats) releases the last stage's summed vector under the policy, then
                   sends its vector for the next stage (encrypted), or the final statistics
mask-keys          (security.masking: pairwise) makes this sum's fresh keys and sends its advert,
                   signed with its long-term identity key
mask-shares        checks every advert of the roster against its pinned identity, then sends its
                   Shamir shares, sealed to each other member
mask-unmask        reveals the shares that remove the masks left in the sum (survivors' self masks,
                   the dropped members' pairwise masks), never both kinds for one member
=================  ============================================================================

With masking on, the request of the phase that sends a sum (``moments``, ``train``, ``stats``) carries
the relayed shares (``mask.relay``): the reply's blobs are masked, and the server unmasks their sum
under encryption after ``mask-unmask`` (docs/masking.md).

With encryption on, ``train``/``evaluate``/``final`` requests carry the aggregates that the
institution has not yet applied (keys ``agg/<round>``) and the federation's digests of the state
after each round; in plaintext they carry the global model itself.
"""

HELLO = "hello"
LEVELS = "levels"
MOMENTS = "moments"
SETUP = "setup"
LOCAL_BASELINE = "local-baseline"
TRAIN = "train"
EVALUATE = "evaluate"
FINAL = "final"
STATS_LEVELS = "stats-levels"
STATS = "stats"
MASK_KEYS = "mask-keys"
MASK_SHARES = "mask-shares"
MASK_UNMASK = "mask-unmask"
PHASES = (HELLO, LEVELS, MOMENTS, SETUP, LOCAL_BASELINE, TRAIN, EVALUATE, FINAL, STATS_LEVELS, STATS, MASK_KEYS,
          MASK_SHARES, MASK_UNMASK)

#: Record holding the global model (plaintext arrays) or the aggregates to apply (blobs).
REC_GLOBAL = "global"
#: Record holding the summed feature statistics for setup.
REC_SETUP = "setup"
#: Record holding the server optimizer's state, in plaintext runs whose rule needs it at the clients.
REC_OPT = "opt"


def aggregate_key(server_round: int) -> str:
    """Name of the blob that holds the aggregate of a round."""
    return f"agg/{server_round:06d}"
