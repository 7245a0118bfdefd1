package gateway

import (
	"encoding/json"
	"reflect"
	"testing"
)

// scanSeeds are bodies of the usual shape and near misses that must go to encoding/json.
var scanSeeds = []string{
	`{"model":"auto","stream":true,"messages":[{"role":"user","content":"Benchmark me"}]}`,
	`{"model":"m","messages":[{"role":"system","content":"Be brief.\nReally."},{"role":"user","content":"Hi \u00e9\ud83d\ude00 \"q\""}],"temperature":0.7,"top_p":1,"max_tokens":100,"stream":false}`,
	`{"model":"m","messages":[{"role":"user","content":"x","name":"bob"}],"stream_options":{"include_usage":true},"seed":42,"response_format":{"type":"json_object"},"stop":["a","b"],"user":"u1","n":1}`,
	`{"messages":[{"role":"user","content":"x"}],"provider":"groq","max_tokens":5,"extra":[1,{"a":null}]}`,
	`{"model":"m","messages":[{"Role":"user","content":"x"}]}`,
	`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x"}]}]}`,
	`{"model":"m","messages":[{"role":"user","content":null}]}`,
	`{"model":null,"messages":[]}`,
	`{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1.5}`,
	`{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1e2}`,
	`{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"}`,
	`{"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":{"Include_Usage":true}}`,
	`{"model":"m","messages":[{"role":"user","content":"x"}],"Model":"other","MESSAGES":1}`,
	`{"model":"m","model":"n","messages":[{"role":"user","content":"a"}],"messages":[{"role":"user","content":"b"}]}`,
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"bad \xff utf8\"}]}",
	`{"mod\u0065l":"m","messages":[{"role":"user","content":"x"}]}`,
	`{"model":"m","messages":[{"role":"user","content":"x"}]} trailing`,
	`[{"role":"user","content":"x"}]`,
	`{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":99999999999999999999}`,
	`{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":1e400}`,
	`{"messages":[{"role":"user","content":"x"}],"Provider":"groq"}`,
	`{"messages":[{"role":"user","content":"x"}],"stream":null}`,
	` { "messages" : [ { "role" : "user" , "content" : "x" } ] , "stop" : "END" } `,
}

// FuzzScanMatchesEncodingJSON: whatever the one-pass scanner accepts, it decodes as
// encoding/json does, for both endpoints.
func FuzzScanMatchesEncodingJSON(f *testing.F) {
	for _, s := range scanSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var fast openAIBody
		var fastExtra map[string]json.RawMessage
		if scanOpenAI(body, &fast, &fastExtra) {
			var slow openAIBody
			var slowExtra map[string]json.RawMessage
			if he := unmarshalOpenAI(body, &slow, &slowExtra); he != nil {
				t.Fatalf("scanner accepted %q, encoding/json says %s", body, he.msg)
			}
			if !reflect.DeepEqual(fast, slow) || !reflect.DeepEqual(fastExtra, slowExtra) {
				t.Fatalf("%q:\nscanner       %+v %s\nencoding/json %+v %s", body, fast, fastExtra, slow, slowExtra)
			}
		}
		var fc chatBody
		if scanChat(body, &fc) {
			var sc chatBody
			if err := json.Unmarshal(body, &sc); err != nil {
				t.Fatalf("scanner accepted %q, encoding/json says %v", body, err)
			}
			if !reflect.DeepEqual(fc, sc) {
				t.Fatalf("%q:\nscanner       %+v\nencoding/json %+v", body, fc, sc)
			}
		}
	})
}

// TestScanTakesTheUsualShape: the fast path is really taken for what SDKs send, and
// left for what needs encoding/json's handling.
func TestScanTakesTheUsualShape(t *testing.T) {
	for i, want := range map[int]bool{0: true, 1: true, 2: true, 3: true, 4: false, 5: false, 6: false, 7: false, 8: false, 11: false, 14: false, 16: false, 17: false} {
		var b openAIBody
		var extra map[string]json.RawMessage
		if got := scanOpenAI([]byte(scanSeeds[i]), &b, &extra); got != want {
			t.Errorf("scanOpenAI(%s) = %v, want %v", scanSeeds[i], got, want)
		}
	}
	var c chatBody
	if !scanChat([]byte(scanSeeds[3]), &c) || c.Provider != "groq" || *c.MaxTokens != 5 || len(c.Messages) != 1 {
		t.Errorf("scanChat: %+v", c)
	}
	if scanChat([]byte(scanSeeds[20]), &c) {
		t.Error("scanChat took a key that differs from provider only by case")
	}
}
