import ArgumentParser
import Interprocess

/// `--trust-owner UID`, `--trust-group GID`, `--trust-anyone`: whose segments a command opens. By
/// default only the current user's (a segment another user put in /dev/shm may be a plant).
struct TrustOptions: ParsableArguments {
    @Option(name: .customLong("trust-owner"), help: ArgumentHelp("Also open segments owned by this user id (repeatable).", valueName: "uid"))
    var owners: [UInt32] = []

    @Option(name: .customLong("trust-group"), help: ArgumentHelp("Also open segments whose file belongs to this group id (repeatable).", valueName: "gid"))
    var groups: [UInt32] = []

    @Flag(name: .customLong("trust-anyone"), help: "Open segments whatever user owns them.")
    var anyone = false

    var trusted: TrustedOwners {
        var trust = TrustedOwners.users(Set(owners))
        for group in groups { trust = trust.union(.group(group)) }
        return anyone ? .anyone : trust
    }
}
