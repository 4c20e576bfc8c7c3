// Commands for a service server's readiness descriptor ("svc-ready-…"), on a Service<String, String>.
// Exit codes: 0 success, 1 failure, 2 usage.
#if canImport(Glibc)
import Glibc
#endif
import Interprocess
import InterprocessToolSupport

/// Runs one service readiness command; returns the exit status.
func runServiceReadinessCommand(_ command: String, _ rest: [String]) -> Int32 {
    do {
        switch command {
        case "svc-ready-hold":
            // svc-ready-hold NAME: opens the Service<String, String> NAME, takes a readiness
            // descriptor (armed), says "registered", and when told exits without closing anything.
            let service = try Service<String, String>.open(name: rest[0])
            let readiness = try service.readinessDescriptor()
            say("registered")
            awaitInstruction(upTo: 120)
            withExtendedLifetime(readiness) {}
            _exit(0)
        default:
            StandardStream.write("child: unknown command \(command)\n", to: 2)
            return 2
        }
    } catch {
        StandardStream.write("child: \(error)\n", to: 2)
        return 1
    }
}
