import DropModelBase
import Testing

@Suite("JSONValue: the one bounded JSON parser and writer")
struct JSONValueTests {
    @Test("objects keep their order; integers stay exact; numbers, strings and escapes round-trip")
    func roundTrip() throws {
        let text =
            #"{"z":1,"a":[true,false,null],"big":9223372036854775807,"neg":-12,"x":0.1,"e":1e-5,"#
            + #""s":"é\n\"\\\t\u0001😀"}"#
        let v = try JSONValue.parse(text)
        #expect(v.object?.keys == ["z", "a", "big", "neg", "x", "e", "s"])
        #expect(v["big"] == .integer(Int64.max))
        #expect(v["neg"]?.int == -12)
        #expect(v["x"] == .number(0.1))
        #expect(v["e"]?.double == 1e-5)
        #expect(v["s"]?.string == "é\n\"\\\t\u{1}😀")
        #expect(try JSONValue.parse(v.serialized()) == v)
        #expect(try JSONValue.parse(v.serialized(.pretty)) == v)
        // Canonical text sorts keys.
        #expect(JSONValue.object(["b": .int(1), "a": .int(2)]).text == #"{"a":2,"b":1}"#)
        // A number beyond Int64 is a double, not an overflow.
        #expect(try JSONValue.parse("18446744073709551616") == .number(18446744073709551616))
        // Escaped surrogate pairs decode to one scalar.
        #expect(try JSONValue.parse(#""\ud83d\ude00""#) == .string("😀"))
    }

    @Test(
        "malformed text is refused with a reason, never a trap",
        arguments: [
            "", " ", "{", "[1,]", "{\"a\":1,}", "01", "-", "1.", ".5", "1e", "+1", "tru", "nul", "\"a", "\"\u{1}\"",
            "\"\\x\"", "\"\\ud83d\"", "\"\\ude00\"", "[1 2]", "{\"a\" 1}", "{1:2}", "1 2", "NaN", "Infinity", "1e999",
        ])
    func malformed(_ text: String) {
        #expect(throws: JSONValue.ParseError.self) { try JSONValue.parse(text) }
    }

    @Test("depth, size and duplicate keys are bounded")
    func bounds() throws {
        let deep = String(repeating: "[", count: 65) + String(repeating: "]", count: 65)
        let e = #expect(throws: JSONValue.ParseError.self) { try JSONValue.parse(deep) }
        #expect(e?.reason == .tooDeep(limit: 64))
        #expect(e?.description.contains("more than 64 deep") == true)
        #expect(try JSONValue.parse(String(repeating: "[", count: 64) + String(repeating: "]", count: 64)) != .null)
        let big = #expect(throws: JSONValue.ParseError.self) {
            try JSONValue.parse("[1,2,3]", limits: JSONValue.Limits(maxBytes: 6))
        }
        #expect(big?.reason == .tooLarge)
        let dup = #expect(throws: JSONValue.ParseError.self) { try JSONValue.parse(#"{"a":1,"b":2,"a":3}"#) }
        #expect(dup?.reason == .duplicateKey("a"))
        // Invalid UTF-8 inside a string.
        let bad: [UInt8] = [0x22, 0xFF, 0xFE, 0x22]
        let utf = #expect(throws: JSONValue.ParseError.self) { try JSONValue.parse(bad) }
        #expect(utf?.reason == .invalidUTF8)
    }

    @Test("non-finite numbers are written as null")
    func nonFinite() {
        #expect(JSONValue.finite(.nan) == .null)
        #expect(JSONValue.finite(.infinity) == .null)
        #expect(JSONValue.number(.nan).serialized() == "null")
        #expect(JSONValue.finite(2.5).serialized() == "2.5")
    }
}

@Suite("Hex")
struct HexTests {
    @Test("encode and decode are inverse; bad text is refused")
    func hex() {
        let bytes: [UInt8] = (0...255).map(UInt8.init)
        let text = Hex.encode(bytes)
        #expect(text.count == 512)
        #expect(text.hasPrefix("000102") && text.hasSuffix("fdfeff"))
        #expect(Hex.decode(text) == bytes)
        #expect(Hex.decode("ABcd") == [0xAB, 0xCD])
        #expect(Hex.decode("abc") == nil)
        #expect(Hex.decode("zz") == nil)
    }
}
