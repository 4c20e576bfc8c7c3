import ArgumentParser
import Foundation
import Interprocess
import InterprocessToolSupport

/// `ipc call NAME TEXT`: sends one request to a service and prints its reply.
struct Call: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send a request to a service and print its reply.",
        discussion: """
            A service of bytes or strings gets TEXT's UTF-8 bytes; a service of JSON requests gets \
            TEXT, which must be JSON (checked before anything is sent). A service of raw values is \
            refused. The reply is printed as `ipc recv` prints a message: text, hexadecimal for raw \
            values, or with --json an object with "bytes" and "text", "value" or "base64". Waits at \
            most --timeout seconds in all (default 10); a refused request, a server that died and a \
            timeout are errors (exit status 1).
            """
    )

    @Argument(help: "The service's name.")
    var name: String

    @Argument(help: "The request (UTF-8).")
    var text: String

    @Option(help: ArgumentHelp("Wait at most this long for the reply.", valueName: "seconds"))
    var timeout: Double = 10

    @Flag(help: "Print the reply as a JSON object.")
    var json = false

    @OptionGroup var trust: TrustOptions

    func validate() throws {
        if !(timeout >= 0 && timeout <= 1e9) { throw ValidationError("--timeout must be a number of seconds, at least 0") }
    }

    func run() throws {
        let service = try Service<[UInt8], [UInt8]>.openAnyType(name: name, trusting: trust.trusted)
        defer { service.detach() }
        let types = service.typeDescription
        if service.requestFormat == .rawValue {
            throw ToolError("'\(name)' takes raw values (\(types.request)); ipc call sends text")
        }
        let request = Array(text.utf8)
        if service.requestFormat == .json, (try? JSONSerialization.jsonObject(with: Data(request), options: [.fragmentsAllowed])) == nil {
            throw ToolError("the request is not JSON, which '\(name)' takes (\(types.request)): \(text)")
        }
        let timeout = Duration.milliseconds(Int64((timeout * 1000).rounded(.up)))
        let format = service.responseFormat
        let json = json
        try Interruptible.run {
            let reply = try await service.request(request, timeout: timeout)
            StandardStream.write((json ? Receive.json(reply, format: format) : Receive.text(reply, format: format)) + "\n")
        }
    }
}

/// `ipc serve NAME --echo`: answers a service's requests from the shell.
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve a service's requests: answer each with the request itself (--echo).",
        discussion: """
            Answers each request with its own bytes, after --prefix if given (the service's request \
            and response types must then be the same). With --create, a persistent service of \
            strings is created if there is none. Serves until the service is closed, --count \
            requests were answered, or SIGINT / SIGTERM; then prints how many it answered.
            """
    )

    @Argument(help: "The service's name.")
    var name: String

    @Flag(help: "Answer each request with itself.")
    var echo = false

    @Option(help: "With --echo: put this before each answer.")
    var prefix = ""

    @Option(help: "Stop after answering this many requests.")
    var count: Int?

    @Flag(help: "Create a persistent service of strings if there is none.")
    var create = false

    @Option(help: "With --create: how many requests can be in flight.")
    var capacity = 64

    @Option(name: .customLong("max-request-size"), help: ArgumentHelp("With --create: the largest request.", valueName: "bytes"))
    var maxRequestSize = 4096

    @Option(name: .customLong("max-response-size"), help: ArgumentHelp("With --create: the largest response.", valueName: "bytes"))
    var maxResponseSize = 4096

    @OptionGroup var trust: TrustOptions

    func validate() throws {
        if !echo { throw ValidationError("say how to answer: --echo") }
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
        if capacity < 1 { throw ValidationError("--capacity must be at least 1") }
        if maxRequestSize < 1 || maxResponseSize < 1 { throw ValidationError("--max-request-size and --max-response-size must be at least 1") }
    }

    func run() throws {
        let service = try openService()
        defer { service.detach() }
        let types = service.typeDescription
        guard types.request == types.response else {
            throw ToolError("'\(name)' answers \(types.request) with \(types.response); --echo needs the same type both ways")
        }
        let prefix = Array(prefix.utf8)
        let limit = count ?? .max
        let name = name
        try Interruptible.run {
            var served = 0
            while served < limit {
                let call: ServiceCall<[UInt8], [UInt8]>
                do throws(InterprocessError) {
                    call = try await service.nextCall()
                } catch {
                    if error.code == .closed { break }
                    throw error
                }
                let request = call.request
                do throws(InterprocessError) {
                    try call.reply(prefix + request)
                } catch {
                    StandardStream.write("ipc: could not answer a request: \(error)\n", to: 2)
                }
                served += 1
            }
            say("served \(served) request\(served == 1 ? "" : "s") of \(name)")
        }
    }

    private func openService() throws -> Service<[UInt8], [UInt8]> {
        guard create else { return try Service<[UInt8], [UInt8]>.openAnyType(name: name, trusting: trust.trusted) }
        for _ in 0..<64 {
            switch Result(catching: { () throws(InterprocessError) in try Service<[UInt8], [UInt8]>.openAnyType(name: name, trusting: trust.trusted) }) {
            case .success(let service): return service
            case .failure(let error) where error.code == .notFound: break
            case .failure(let error): throw error
            }
            switch Result(catching: { () throws(InterprocessError) in
                try Service<String, String>.create(
                    name: name, capacity: capacity, maxRequestSize: maxRequestSize, maxResponseSize: maxResponseSize, lifetime: .persistent)
            }) {
            case .success(let created): created.detach()
            case .failure(let error) where error.code == .alreadyExists: break
            case .failure(let error): throw error
            }
        }
        throw InterprocessError(.createFailed, objectName: name, detail: "it kept appearing and disappearing")
    }
}
